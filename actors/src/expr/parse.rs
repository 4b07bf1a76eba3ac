//! Lexer and Pratt parser: expression text to an untyped syntax tree whose nodes carry their
//! 1-based character column.

use super::ExprError;

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    /// Binding power: higher binds tighter. All binary operators are left-associative.
    fn binding_power(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
        }
    }

    /// The operator as written.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// Unary operators bind tighter than every binary one.
const PREFIX_POWER: u8 = 6;

/// A prefix operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnOp {
    Neg,
    Not,
}

/// An untyped syntax node and the column it starts at (an operator's column for operations).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ast {
    pub col: usize,
    pub kind: AstKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum AstKind {
    Int(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Field(String),
    Unary(UnOp, Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(u64),
    Float(f64),
    Str(String),
    Ident(String),
    Op(BinOp),
    Bang,
    LParen,
    RParen,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Int(v) => format!("number `{v}`"),
            Tok::Float(v) => format!("number `{v}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Op(op) => format!("`{}`", op.symbol()),
            Tok::Bang => "`!`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// Parse a whole expression.
pub(super) fn parse(src: &str) -> Result<Ast, ExprError> {
    let mut p = Parser { toks: lex(src)?, pos: 0 };
    let ast = p.expr(0)?;
    match p.peek() {
        (Tok::Eof, _) => Ok(ast),
        (tok, col) => Err(ExprError::Expected { expected: "an operator or the end", found: tok.describe(), col }),
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> (&Tok, usize) {
        let (tok, col) = &self.toks[self.pos.min(self.toks.len() - 1)];
        (tok, *col)
    }

    fn bump(&mut self) -> (Tok, usize) {
        let (tok, col) = self.peek();
        let tok = tok.clone();
        self.pos += 1;
        (tok, col)
    }

    /// Pratt loop: a prefix expression, then binary operators binding at least `min_power`.
    fn expr(&mut self, min_power: u8) -> Result<Ast, ExprError> {
        let mut lhs = self.prefix()?;
        while let (Tok::Op(op), col) = self.peek() {
            let (op, power) = (*op, op.binding_power());
            if power < min_power {
                break;
            }
            self.bump();
            let rhs = self.expr(power + 1)?;
            let kind = AstKind::Binary(op, Box::new(lhs), Box::new(rhs));
            lhs = Ast { col, kind };
        }
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Ast, ExprError> {
        let (tok, col) = self.bump();
        let kind = match tok {
            Tok::Int(v) => AstKind::Int(v),
            Tok::Float(v) => AstKind::Float(v),
            Tok::Str(s) => AstKind::Str(s),
            Tok::Ident(name) => match name.as_str() {
                "true" => AstKind::Bool(true),
                "false" => AstKind::Bool(false),
                _ => AstKind::Field(name),
            },
            Tok::Op(BinOp::Sub) => AstKind::Unary(UnOp::Neg, Box::new(self.expr(PREFIX_POWER)?)),
            Tok::Bang => AstKind::Unary(UnOp::Not, Box::new(self.expr(PREFIX_POWER)?)),
            Tok::LParen => return self.parenthesised(),
            other => return Err(ExprError::Expected { expected: "an expression", found: other.describe(), col }),
        };
        Ok(Ast { col, kind })
    }

    fn parenthesised(&mut self) -> Result<Ast, ExprError> {
        let inner = self.expr(0)?;
        match self.bump() {
            (Tok::RParen, _) => Ok(inner),
            (tok, col) => Err(ExprError::Expected { expected: "`)`", found: tok.describe(), col }),
        }
    }
}

/// Split `src` into tokens with their columns, ending with `Eof`.
fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, col) = (chars[i], i + 1);
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let rest = &chars[i..];
        let (tok, len) = if c.is_ascii_digit() {
            lex_number(rest, col)?
        } else if c == '"' {
            lex_string(rest, col)?
        } else if c.is_alphabetic() || c == '_' {
            let len = rest.iter().take_while(|c| c.is_alphanumeric() || **c == '_').count();
            (Tok::Ident(rest[..len].iter().collect()), len)
        } else {
            lex_symbol(rest, col)?
        };
        toks.push((tok, col));
        i += len;
    }
    toks.push((Tok::Eof, chars.len() + 1));
    Ok(toks)
}

/// `digits`, or a float: `digits.digits`, optionally with an exponent `e[+-]digits`.
fn lex_number(s: &[char], col: usize) -> Result<(Tok, usize), ExprError> {
    let digits = |from: usize| s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut len = digits(0);
    let mut float = false;
    if s.get(len) == Some(&'.') && s.get(len + 1).is_some_and(|c| c.is_ascii_digit()) {
        len += 1 + digits(len + 1);
        float = true;
    }
    if matches!(s.get(len), Some('e' | 'E')) {
        let sign = usize::from(matches!(s.get(len + 1), Some('+' | '-')));
        let exp = digits(len + 1 + sign);
        if exp > 0 {
            len += 1 + sign + exp;
            float = true;
        }
    }
    let tail = s[len..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').count();
    let text: String = s[..len + tail].iter().collect();
    let bad = || ExprError::BadNumber { text: text.clone(), col };
    if tail > 0 {
        return Err(bad());
    }
    let tok =
        if float { Tok::Float(text.parse().map_err(|_| bad())?) } else { Tok::Int(text.parse().map_err(|_| bad())?) };
    Ok((tok, len))
}

/// A double-quoted string with escapes `\"`, `\\`, `\n` and `\t`.
fn lex_string(s: &[char], col: usize) -> Result<(Tok, usize), ExprError> {
    let mut text = String::new();
    let mut i = 1;
    loop {
        match s.get(i) {
            None => return Err(ExprError::UnterminatedString { col }),
            Some('"') => return Ok((Tok::Str(text), i + 1)),
            Some('\\') => {
                let escaped = match s.get(i + 1) {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(c @ ('"' | '\\')) => *c,
                    _ => return Err(ExprError::BadEscape { col: col + i }),
                };
                text.push(escaped);
                i += 2;
            }
            Some(c) => {
                text.push(*c);
                i += 1;
            }
        }
    }
}

fn lex_symbol(s: &[char], col: usize) -> Result<(Tok, usize), ExprError> {
    let two = |op| Ok((Tok::Op(op), 2));
    match (s[0], s.get(1).copied()) {
        ('=', Some('=')) => two(BinOp::Eq),
        ('!', Some('=')) => two(BinOp::Ne),
        ('<', Some('=')) => two(BinOp::Le),
        ('>', Some('=')) => two(BinOp::Ge),
        ('&', Some('&')) => two(BinOp::And),
        ('|', Some('|')) => two(BinOp::Or),
        (c, _) => {
            let tok = match c {
                '+' => Tok::Op(BinOp::Add),
                '-' => Tok::Op(BinOp::Sub),
                '*' => Tok::Op(BinOp::Mul),
                '/' => Tok::Op(BinOp::Div),
                '%' => Tok::Op(BinOp::Rem),
                '<' => Tok::Op(BinOp::Lt),
                '>' => Tok::Op(BinOp::Gt),
                '!' => Tok::Bang,
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                _ => return Err(ExprError::UnexpectedChar { found: c, col }),
            };
            Ok((tok, 1))
        }
    }
}
