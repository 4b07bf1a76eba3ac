//! Type checker: an untyped syntax tree plus the input schema to a typed tree with field names
//! resolved to positions, integer constants folded, and numeric promotions made explicit.
//!
//! Typing rules (documented for users in `expr.rs`):
//! - an integer constant takes the type of the number it meets (u64, i64 or f64) and must fit it;
//!   alone it is i64 (u64 if above `i64::MAX`). Constant integer subexpressions fold exactly;
//! - u64 or i64 mixed with f64 promotes to f64; u64 mixed with i64 is an error;
//! - `-` needs i64 or f64; `!`, `&&` and `||` need bool;
//! - `==`/`!=` compare numbers, strings or bools; ordering compares numbers or strings.

use super::parse::{Ast, AstKind, BinOp, UnOp};
use super::{ArithOp, BoolNode, CmpOp, ExprError, NumNode, StrNode, Typed};
use crate::record::{FieldType, Schema};

/// A checked subtree: typed, or an integer constant whose type its context decides.
enum Checked {
    Int(i128),
    Typed(Typed),
}

impl Checked {
    fn type_name(&self) -> &'static str {
        match self {
            Checked::Int(_) => "integer",
            Checked::Typed(t) => t.ty().name(),
        }
    }
}

/// Numeric operands of one binary operation, converted to their common type.
enum NumPair {
    U64(NumNode<u64>, NumNode<u64>),
    I64(NumNode<i64>, NumNode<i64>),
    F64(NumNode<f64>, NumNode<f64>),
}

/// Type-check a whole expression.
pub(super) fn check(ast: &Ast, schema: &Schema) -> Result<Typed, ExprError> {
    match check_node(ast, schema)? {
        Checked::Typed(t) => Ok(t),
        Checked::Int(v) => match i64::try_from(v) {
            Ok(v) => Ok(Typed::I64(NumNode::Const(v))),
            Err(_) => Ok(Typed::U64(NumNode::Const(fit(v, FieldType::U64, ast.col)?))),
        },
    }
}

fn check_node(ast: &Ast, schema: &Schema) -> Result<Checked, ExprError> {
    let col = ast.col;
    Ok(match &ast.kind {
        AstKind::Int(v) => Checked::Int(*v as i128),
        AstKind::Float(v) => Checked::Typed(Typed::F64(NumNode::Const(*v))),
        AstKind::Bool(v) => Checked::Typed(Typed::Bool(BoolNode::Const(*v))),
        AstKind::Str(s) => Checked::Typed(Typed::Str(StrNode::Const(s.as_str().into()))),
        AstKind::Field(name) => Checked::Typed(field(name, schema, col)?),
        AstKind::Unary(op, e) => unary(*op, check_node(e, schema)?, col)?,
        AstKind::Binary(op, l, r) => binary(*op, check_node(l, schema)?, check_node(r, schema)?, col)?,
    })
}

fn field(name: &str, schema: &Schema, col: usize) -> Result<Typed, ExprError> {
    let Some(pos) = schema.position(name) else {
        let fields: Vec<&str> = schema.fields().map(|(n, _)| n).collect();
        return Err(ExprError::UnknownField { name: name.to_owned(), col, fields: fields.join(", ") });
    };
    Ok(match schema.field(pos).1 {
        FieldType::U64 => Typed::U64(NumNode::Field(pos)),
        FieldType::I64 => Typed::I64(NumNode::Field(pos)),
        FieldType::F64 => Typed::F64(NumNode::Field(pos)),
        FieldType::Bool => Typed::Bool(BoolNode::Field(pos)),
        FieldType::Str => Typed::Str(StrNode::Field(pos)),
    })
}

fn unary(op: UnOp, e: Checked, col: usize) -> Result<Checked, ExprError> {
    let wrong = |expected, e: &Checked| ExprError::OperandType {
        op: if op == UnOp::Neg { "-" } else { "!" },
        expected,
        found: e.type_name(),
        col,
    };
    Ok(Checked::Typed(match (op, e) {
        (UnOp::Neg, Checked::Int(v)) => return Ok(Checked::Int(-v)),
        (UnOp::Neg, Checked::Typed(Typed::I64(n))) => Typed::I64(NumNode::Neg(Box::new(n))),
        (UnOp::Neg, Checked::Typed(Typed::F64(n))) => Typed::F64(NumNode::Neg(Box::new(n))),
        (UnOp::Not, Checked::Typed(Typed::Bool(b))) => Typed::Bool(BoolNode::Not(Box::new(b))),
        (UnOp::Neg, e) => return Err(wrong("a signed number (i64 or f64)", &e)),
        (UnOp::Not, e) => return Err(wrong("a bool", &e)),
    }))
}

fn binary(op: BinOp, l: Checked, r: Checked, col: usize) -> Result<Checked, ExprError> {
    match op {
        BinOp::Add => arith(ArithOp::Add, l, r, col),
        BinOp::Sub => arith(ArithOp::Sub, l, r, col),
        BinOp::Mul => arith(ArithOp::Mul, l, r, col),
        BinOp::Div => arith(ArithOp::Div, l, r, col),
        BinOp::Rem => arith(ArithOp::Rem, l, r, col),
        BinOp::Eq => compare(CmpOp::Eq, l, r, col),
        BinOp::Ne => compare(CmpOp::Ne, l, r, col),
        BinOp::Lt => compare(CmpOp::Lt, l, r, col),
        BinOp::Le => compare(CmpOp::Le, l, r, col),
        BinOp::Gt => compare(CmpOp::Gt, l, r, col),
        BinOp::Ge => compare(CmpOp::Ge, l, r, col),
        BinOp::And | BinOp::Or => logic(op, l, r, col),
    }
}

fn arith(op: ArithOp, l: Checked, r: Checked, col: usize) -> Result<Checked, ExprError> {
    if let (Checked::Int(a), Checked::Int(b)) = (&l, &r) {
        return fold(op, *a, *b, col).map(Checked::Int);
    }
    let verb = op.verb();
    let typed = match numeric_pair(l, r, col, |l, r| ExprError::ArithTypes { verb, lhs: l, rhs: r, col })? {
        NumPair::U64(a, b) => Typed::U64(NumNode::Arith(op, Box::new(a), Box::new(b))),
        NumPair::I64(a, b) => Typed::I64(NumNode::Arith(op, Box::new(a), Box::new(b))),
        NumPair::F64(a, b) => Typed::F64(NumNode::Arith(op, Box::new(a), Box::new(b))),
    };
    Ok(Checked::Typed(typed))
}

/// Exact arithmetic on integer constants; `/` and `%` by zero give 0, as at run time.
fn fold(op: ArithOp, a: i128, b: i128, col: usize) -> Result<i128, ExprError> {
    let v = match op {
        ArithOp::Add => a.checked_add(b),
        ArithOp::Sub => a.checked_sub(b),
        ArithOp::Mul => a.checked_mul(b),
        ArithOp::Div => Some(a.checked_div(b).unwrap_or(0)),
        ArithOp::Rem => Some(a.checked_rem(b).unwrap_or(0)),
    };
    v.ok_or(ExprError::ConstantOverflow { col })
}

fn compare(op: CmpOp, l: Checked, r: Checked, col: usize) -> Result<Checked, ExprError> {
    let sym = op.symbol();
    let node = match (l, r) {
        (Checked::Int(a), Checked::Int(b)) => BoolNode::Const(op.apply(&a, &b)),
        (Checked::Typed(Typed::Str(a)), Checked::Typed(Typed::Str(b))) => BoolNode::CmpStr(op, a, b),
        (Checked::Typed(Typed::Bool(a)), Checked::Typed(Typed::Bool(b))) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
            BoolNode::CmpBool(op, Box::new(a), Box::new(b))
        }
        (l, r) => match numeric_pair(l, r, col, |l, r| ExprError::CompareTypes { op: sym, lhs: l, rhs: r, col })? {
            NumPair::U64(a, b) => BoolNode::CmpU64(op, Box::new(a), Box::new(b)),
            NumPair::I64(a, b) => BoolNode::CmpI64(op, Box::new(a), Box::new(b)),
            NumPair::F64(a, b) => BoolNode::CmpF64(op, Box::new(a), Box::new(b)),
        },
    };
    Ok(Checked::Typed(Typed::Bool(node)))
}

fn logic(op: BinOp, l: Checked, r: Checked, col: usize) -> Result<Checked, ExprError> {
    let (a, b) = match (l, r) {
        (Checked::Typed(Typed::Bool(a)), Checked::Typed(Typed::Bool(b))) => (a, b),
        (Checked::Typed(Typed::Bool(_)), other) | (other, _) => {
            return Err(ExprError::OperandType { op: op.symbol(), expected: "bool", found: other.type_name(), col })
        }
    };
    let (a, b) = (Box::new(a), Box::new(b));
    Ok(Checked::Typed(Typed::Bool(match op {
        BinOp::And => BoolNode::And(a, b),
        _ => BoolNode::Or(a, b),
    })))
}

/// Bring two operands to a common numeric type (see the module rules), or report `wrong`.
fn numeric_pair(
    l: Checked,
    r: Checked,
    col: usize,
    wrong: impl Fn(&'static str, &'static str) -> ExprError,
) -> Result<NumPair, ExprError> {
    let (lhs, rhs) = (l.type_name(), r.type_name());
    let ty = |c: &Checked| match c {
        Checked::Int(_) => None,
        Checked::Typed(t) => Some(t.ty()),
    };
    let common = match (ty(&l), ty(&r)) {
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a == b => a,
        (Some(FieldType::F64), Some(FieldType::U64 | FieldType::I64))
        | (Some(FieldType::U64 | FieldType::I64), Some(FieldType::F64)) => FieldType::F64,
        _ => return Err(wrong(lhs, rhs)),
    };
    let err = || wrong(lhs, rhs);
    Ok(match common {
        FieldType::U64 => NumPair::U64(to_u64(l, col).ok_or_else(err)??, to_u64(r, col).ok_or_else(err)??),
        FieldType::I64 => NumPair::I64(to_i64(l, col).ok_or_else(err)??, to_i64(r, col).ok_or_else(err)??),
        FieldType::F64 => NumPair::F64(to_f64(l).ok_or_else(err)?, to_f64(r).ok_or_else(err)?),
        _ => return Err(err()),
    })
}

fn fit<T: TryFrom<i128>>(v: i128, ty: FieldType, col: usize) -> Result<T, ExprError> {
    T::try_from(v).map_err(|_| ExprError::ConstantRange { value: v, ty, col })
}

fn to_u64(c: Checked, col: usize) -> Option<Result<NumNode<u64>, ExprError>> {
    match c {
        Checked::Int(v) => Some(fit(v, FieldType::U64, col).map(NumNode::Const)),
        Checked::Typed(Typed::U64(n)) => Some(Ok(n)),
        Checked::Typed(_) => None,
    }
}

fn to_i64(c: Checked, col: usize) -> Option<Result<NumNode<i64>, ExprError>> {
    match c {
        Checked::Int(v) => Some(fit(v, FieldType::I64, col).map(NumNode::Const)),
        Checked::Typed(Typed::I64(n)) => Some(Ok(n)),
        Checked::Typed(_) => None,
    }
}

fn to_f64(c: Checked) -> Option<NumNode<f64>> {
    match c {
        Checked::Int(v) => Some(NumNode::Const(v as f64)),
        Checked::Typed(Typed::F64(n)) => Some(n),
        Checked::Typed(Typed::U64(n)) => Some(NumNode::FromU64(Box::new(n))),
        Checked::Typed(Typed::I64(n)) => Some(NumNode::FromI64(Box::new(n))),
        Checked::Typed(_) => None,
    }
}
