//! Expressions for map and filter: parsed and type-checked once against a [`Schema`], then
//! evaluated per record on the archive in place.
//!
//! Grammar, loosest binding first (all binary operators left-associative):
//! `||`, `&&`, comparisons `== != < <= > >=`, `+ -`, `* / %`, unary `- !`, then atoms: integers,
//! floats (`1.5`, `2e3`), `true`/`false`, double-quoted strings (escapes `\" \\ \n \t`), field
//! names, and parentheses.
//!
//! Types (checked at parse time; errors name the column):
//! - integer constants take the type of the number they meet and must fit it (`price + 1` is
//!   u64 when `price` is); alone they are i64. Constant subexpressions fold exactly;
//! - u64 or i64 mixed with f64 is promoted to f64 (exact up to 2^53); u64 mixed with i64 is an
//!   error (no silent change of signedness);
//! - `-` takes i64 or f64; `!`, `&&`, `||` take bool; comparisons give bool; strings and bools
//!   support `==`/`!=`, strings also ordering (bytewise).
//!
//! Run time, never panicking: u64 and i64 arithmetic wraps (two's complement), integer `/` and
//! `%` by zero give 0, f64 follows IEEE (`x / 0.0` is ±inf or NaN; comparisons with NaN are false
//! except `!=`). `&&` and `||` short-circuit.
//!
//! ```
//! use dirigo_actors::expr::{Expr, Predicate};
//! use dirigo_actors::record::{access, FieldType, Record, Schema, Value};
//! let schema = Schema::new(vec![("price".into(), FieldType::U64), ("auction".into(), FieldType::U64)]);
//! let bytes = Record::from(vec![Value::U64(30), Value::U64(7)]).to_archive();
//! let rec = access(&bytes).unwrap();
//! assert_eq!(Expr::parse("price * 2 + 1", &schema).unwrap().eval(rec), Value::U64(61));
//! assert!(Predicate::parse("price > 10 && auction != 3", &schema).unwrap().test(rec));
//! let err = Expr::parse("prce", &schema).unwrap_err();
//! assert_eq!(err.to_string(), "unknown field `prce` at column 1; fields are: price, auction");
//! ```

mod check;
mod parse;

use crate::record::{ArchivedRecord, ArchivedValue, Cell, FieldType, Schema, Value};

/// Why an expression does not parse or type-check. Columns count characters from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("unexpected character `{found}` at column {col}")]
    UnexpectedChar { found: char, col: usize },
    #[error("invalid number `{text}` at column {col}")]
    BadNumber { text: String, col: usize },
    #[error("unterminated string starting at column {col}")]
    UnterminatedString { col: usize },
    #[error("unknown escape in string at column {col} (valid: \\\" \\\\ \\n \\t)")]
    BadEscape { col: usize },
    #[error("expected {expected} at column {col}, found {found}")]
    Expected { expected: &'static str, found: String, col: usize },
    #[error("unknown field `{name}` at column {col}; fields are: {fields}")]
    UnknownField { name: String, col: usize, fields: String },
    #[error("cannot {verb} {lhs} and {rhs} at column {col}")]
    ArithTypes { verb: &'static str, lhs: &'static str, rhs: &'static str, col: usize },
    #[error("cannot compare {lhs} and {rhs} with `{op}` at column {col}")]
    CompareTypes { op: &'static str, lhs: &'static str, rhs: &'static str, col: usize },
    #[error("`{op}` needs {expected}, found {found} at column {col}")]
    OperandType { op: &'static str, expected: &'static str, found: &'static str, col: usize },
    #[error("integer constant overflows at column {col}")]
    ConstantOverflow { col: usize },
    #[error("integer constant {value} does not fit in {ty} at column {col}")]
    ConstantRange { value: i128, ty: FieldType, col: usize },
    #[error("expression is {found}, a predicate must be bool")]
    NotBool { found: FieldType },
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithOp {
    fn verb(self) -> &'static str {
        match self {
            ArithOp::Add => "add",
            ArithOp::Sub => "subtract",
            ArithOp::Mul => "multiply",
            ArithOp::Div => "divide",
            ArithOp::Rem => "take the remainder of",
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    #[inline]
    fn apply<T: PartialOrd + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// The three numeric types, with the run-time arithmetic rules of the module docs.
trait Numeric: Copy + PartialOrd {
    /// Read from a record field; `None` if the field has another type.
    fn read(v: &ArchivedValue) -> Option<Self>;
    fn arith(op: ArithOp, a: Self, b: Self) -> Self;
    fn neg(self) -> Self;
    fn from_u64(v: u64) -> Self;
    fn from_i64(v: i64) -> Self;
    fn into_value(self) -> Value;
    /// What a field reads as in a record that does not match its schema (never in practice:
    /// records are validated at ingress).
    const MISSING: Self;
}

macro_rules! integer {
    ($t:ty, $read:ident, $variant:ident) => {
        impl Numeric for $t {
            const MISSING: Self = 0;
            #[inline]
            fn read(v: &ArchivedValue) -> Option<Self> {
                v.$read()
            }
            #[inline]
            fn arith(op: ArithOp, a: Self, b: Self) -> Self {
                match op {
                    ArithOp::Add => a.wrapping_add(b),
                    ArithOp::Sub => a.wrapping_sub(b),
                    ArithOp::Mul => a.wrapping_mul(b),
                    ArithOp::Div => a.checked_div(b).unwrap_or_else(|| if b == 0 { 0 } else { a.wrapping_div(b) }),
                    ArithOp::Rem => a.checked_rem(b).unwrap_or(0),
                }
            }
            #[inline]
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            fn from_u64(v: u64) -> Self {
                v as $t
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
        }
    };
}

integer!(u64, as_u64, U64);
integer!(i64, as_i64, I64);

impl Numeric for f64 {
    const MISSING: Self = 0.0;
    #[inline]
    fn read(v: &ArchivedValue) -> Option<Self> {
        v.as_f64()
    }
    #[inline]
    fn arith(op: ArithOp, a: Self, b: Self) -> Self {
        match op {
            ArithOp::Add => a + b,
            ArithOp::Sub => a - b,
            ArithOp::Mul => a * b,
            ArithOp::Div => a / b,
            ArithOp::Rem => a % b,
        }
    }
    fn neg(self) -> Self {
        -self
    }
    fn from_u64(v: u64) -> Self {
        v as f64
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
    fn into_value(self) -> Value {
        Value::F64(self)
    }
}

/// A record's fields, archived: what expressions read.
type Fields = [ArchivedValue];

/// Field `pos` of `rec` as a `T` (`T::MISSING` if the record has no such field of that type).
#[inline(always)]
fn read_field<T: Numeric>(rec: &Fields, pos: usize) -> T {
    rec.get(pos).and_then(T::read).unwrap_or(T::MISSING)
}

/// A typed numeric subexpression producing `T`.
#[derive(Clone, Debug, PartialEq)]
enum NumNode<T> {
    Field(usize),
    Const(T),
    Neg(Box<NumNode<T>>),
    Arith(ArithOp, Box<NumNode<T>>, Box<NumNode<T>>),
    /// Promotion of a u64 operand (built for `T = f64` only).
    FromU64(Box<NumNode<u64>>),
    /// Promotion of an i64 operand (built for `T = f64` only).
    FromI64(Box<NumNode<i64>>),
}

impl<T: Numeric> NumNode<T> {
    /// Hot path: no allocation.
    #[inline]
    fn eval(&self, rec: &Fields) -> T {
        match self {
            NumNode::Field(pos) => read_field(rec, *pos),
            NumNode::Const(v) => *v,
            NumNode::Neg(e) => e.eval(rec).neg(),
            NumNode::Arith(op, a, b) => T::arith(*op, a.eval(rec), b.eval(rec)),
            NumNode::FromU64(e) => T::from_u64(e.eval(rec)),
            NumNode::FromI64(e) => T::from_i64(e.eval(rec)),
        }
    }

    /// [`NumNode::eval`] with a field or a literal read in place: no call.
    #[inline(always)]
    fn eval_leaf(&self, rec: &Fields) -> T {
        match self {
            NumNode::Field(pos) => read_field(rec, *pos),
            NumNode::Const(v) => *v,
            other => other.eval(rec),
        }
    }

    /// [`NumNode::eval`] at the root of an expression: the common shapes (a field, a literal,
    /// one operation on those) evaluate inline, in the caller's loop; deeper trees recurse.
    #[inline(always)]
    fn eval_root(&self, rec: &Fields) -> T {
        match self {
            NumNode::Arith(op, a, b) => T::arith(*op, a.eval_leaf(rec), b.eval_leaf(rec)),
            other => other.eval_leaf(rec),
        }
    }
}

/// A string subexpression: a field or a literal.
#[derive(Clone, Debug, PartialEq)]
enum StrNode {
    Field(usize),
    Const(Box<str>),
}

impl StrNode {
    /// Hot path: borrows from the record or the literal.
    #[inline]
    fn eval<'a>(&'a self, rec: &'a Fields) -> &'a str {
        match self {
            StrNode::Field(pos) => rec.get(*pos).and_then(|v| v.as_str()).unwrap_or(""),
            StrNode::Const(s) => s,
        }
    }
}

/// A boolean subexpression.
#[derive(Clone, Debug, PartialEq)]
enum BoolNode {
    Field(usize),
    Const(bool),
    Not(Box<BoolNode>),
    And(Box<BoolNode>, Box<BoolNode>),
    Or(Box<BoolNode>, Box<BoolNode>),
    CmpU64(CmpOp, Box<NumNode<u64>>, Box<NumNode<u64>>),
    CmpI64(CmpOp, Box<NumNode<i64>>, Box<NumNode<i64>>),
    CmpF64(CmpOp, Box<NumNode<f64>>, Box<NumNode<f64>>),
    CmpStr(CmpOp, StrNode, StrNode),
    CmpBool(CmpOp, Box<BoolNode>, Box<BoolNode>),
}

impl BoolNode {
    /// Hot path: no allocation.
    #[inline]
    fn eval(&self, rec: &Fields) -> bool {
        match self {
            BoolNode::Field(pos) => rec.get(*pos).and_then(|v| v.as_bool()).unwrap_or(false),
            BoolNode::Const(v) => *v,
            BoolNode::Not(e) => !e.eval(rec),
            BoolNode::And(a, b) => a.eval(rec) && b.eval(rec),
            BoolNode::Or(a, b) => a.eval(rec) || b.eval(rec),
            BoolNode::CmpU64(op, a, b) => op.apply(&a.eval_root(rec), &b.eval_root(rec)),
            BoolNode::CmpI64(op, a, b) => op.apply(&a.eval_root(rec), &b.eval_root(rec)),
            BoolNode::CmpF64(op, a, b) => op.apply(&a.eval_root(rec), &b.eval_root(rec)),
            BoolNode::CmpStr(op, a, b) => op.apply(a.eval(rec), b.eval(rec)),
            BoolNode::CmpBool(op, a, b) => op.apply(&a.eval(rec), &b.eval(rec)),
        }
    }
}

/// A type-checked expression tree, by result type.
#[derive(Clone, Debug, PartialEq)]
enum Typed {
    U64(NumNode<u64>),
    I64(NumNode<i64>),
    F64(NumNode<f64>),
    Bool(BoolNode),
    Str(StrNode),
}

impl Typed {
    fn ty(&self) -> FieldType {
        match self {
            Typed::U64(_) => FieldType::U64,
            Typed::I64(_) => FieldType::I64,
            Typed::F64(_) => FieldType::F64,
            Typed::Bool(_) => FieldType::Bool,
            Typed::Str(_) => FieldType::Str,
        }
    }
}

/// An expression of any type, ready to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: Typed,
}

impl Expr {
    /// Parse and type-check `src` against `schema`. Cold path.
    pub fn parse(src: &str, schema: &Schema) -> Result<Expr, ExprError> {
        let ast = parse::parse(src)?;
        Ok(Expr { root: check::check(&ast, schema)? })
    }

    /// The type of the expression's result.
    pub fn ty(&self) -> FieldType {
        self.root.ty()
    }

    /// Evaluate on `rec` into `out`, reusing `out`'s string buffer. Hot path: no allocation in
    /// steady state (a string result allocates only when `out` held no string).
    #[inline]
    pub fn eval_into(&self, rec: &ArchivedRecord, out: &mut Value) {
        let rec: &Fields = &rec.fields;
        // A slot already of the result's type (a map's scratch row, after its first record)
        // takes the new payload alone: one store, and no drop of the old value to check for.
        match (&self.root, out) {
            (Typed::U64(e), Value::U64(x)) => *x = e.eval_root(rec),
            (Typed::I64(e), Value::I64(x)) => *x = e.eval_root(rec),
            (Typed::F64(e), Value::F64(x)) => *x = e.eval_root(rec),
            (Typed::Bool(e), Value::Bool(x)) => *x = e.eval(rec),
            (Typed::Str(e), Value::Str(buf)) => {
                buf.clear();
                buf.push_str(e.eval(rec));
            }
            (Typed::U64(e), out) => *out = e.eval(rec).into_value(),
            (Typed::I64(e), out) => *out = e.eval(rec).into_value(),
            (Typed::F64(e), out) => *out = e.eval(rec).into_value(),
            (Typed::Bool(e), out) => *out = Value::Bool(e.eval(rec)),
            (Typed::Str(e), out) => *out = Value::Str(e.eval(rec).to_owned()),
        }
    }

    /// Evaluate on `rec` into a new value (allocates for strings).
    pub fn eval(&self, rec: &ArchivedRecord) -> Value {
        let mut out = Value::Bool(false);
        self.eval_into(rec, &mut out);
        out
    }

    /// The expression as one of scalar result (u64, i64, f64 or bool), evaluated to a [`Cell`];
    /// `Err(self)` for a string expression.
    pub fn into_scalar(self) -> Result<ScalarExpr, Expr> {
        match self.root {
            Typed::Str(_) => Err(self),
            root => Ok(ScalarExpr { shape: Shape::of(&root), root }),
        }
    }
}

/// An expression whose result is a scalar (never a string): evaluates to the archived form of
/// its value, a [`Cell`], with no [`Value`] made.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarExpr {
    /// Never `Typed::Str` (`Expr::into_scalar`).
    root: Typed,
    /// The tree's shape when it is one of the common ones, evaluated without walking it.
    shape: Shape,
}

/// Shapes of scalar expressions that a map's fields mostly have: a `u64` field as it is (`key`)
/// or with a literal (`value + 1`). Each evaluates with one test of the shape, where the tree
/// takes a test of its type, then of its node, then of the node's operands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    U64Field(usize),
    U64FieldConst(ArithOp, usize, u64),
    Tree,
}

impl Shape {
    fn of(root: &Typed) -> Shape {
        match root {
            Typed::U64(NumNode::Field(pos)) => Shape::U64Field(*pos),
            Typed::U64(NumNode::Arith(op, a, b)) => match (&**a, &**b) {
                (NumNode::Field(pos), NumNode::Const(c)) => Shape::U64FieldConst(*op, *pos, *c),
                _ => Shape::Tree,
            },
            _ => Shape::Tree,
        }
    }
}

impl ScalarExpr {
    /// Evaluate on `rec`. Hot path: the common shapes (a field, a literal, one operation on
    /// those) evaluate inline.
    #[inline]
    pub fn eval_cell(&self, rec: &ArchivedRecord) -> Cell {
        self.eval_fields(&rec.fields)
    }

    /// Evaluate on a record's fields (`ArchivedRecord::fields`, or a row of cells seen as its
    /// archived values: [`Cell::as_archived`]). Hot path.
    #[inline(always)]
    pub fn eval_fields(&self, rec: &[ArchivedValue]) -> Cell {
        match self.shape {
            Shape::U64Field(pos) => return Cell::u64(read_field(rec, pos)),
            Shape::U64FieldConst(op, pos, c) => return Cell::u64(u64::arith(op, read_field(rec, pos), c)),
            Shape::Tree => {}
        }
        match &self.root {
            Typed::U64(e) => Cell::u64(e.eval_root(rec)),
            Typed::I64(e) => Cell::i64(e.eval_root(rec)),
            Typed::F64(e) => Cell::f64(e.eval_root(rec)),
            Typed::Bool(e) => Cell::bool(e.eval(rec)),
            Typed::Str(_) => unreachable!("a scalar expression of strings"),
        }
    }
}

/// A boolean expression, for filters.
#[derive(Clone, Debug, PartialEq)]
pub struct Predicate {
    root: BoolNode,
    /// The tree's shape when it is a common one, tested without walking it.
    shape: PredShape,
}

/// Shapes of predicates that filters mostly have: an integer field compared with a literal
/// (`value > 0`, `delta <= -5`). Each tests with one match on the shape, where the tree takes
/// a call and a test per node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PredShape {
    U64FieldConst(CmpOp, usize, u64),
    I64FieldConst(CmpOp, usize, i64),
    Tree,
}

impl PredShape {
    fn of(root: &BoolNode) -> PredShape {
        match root {
            BoolNode::CmpU64(op, a, b) => match (&**a, &**b) {
                (NumNode::Field(pos), NumNode::Const(c)) => PredShape::U64FieldConst(*op, *pos, *c),
                _ => PredShape::Tree,
            },
            BoolNode::CmpI64(op, a, b) => match (&**a, &**b) {
                (NumNode::Field(pos), NumNode::Const(c)) => PredShape::I64FieldConst(*op, *pos, *c),
                _ => PredShape::Tree,
            },
            _ => PredShape::Tree,
        }
    }
}

impl Predicate {
    /// Parse and type-check `src` against `schema`; it must be bool. Cold path.
    pub fn parse(src: &str, schema: &Schema) -> Result<Predicate, ExprError> {
        match Expr::parse(src, schema)?.root {
            Typed::Bool(root) => Ok(Predicate { shape: PredShape::of(&root), root }),
            other => Err(ExprError::NotBool { found: other.ty() }),
        }
    }

    /// Whether `rec` satisfies the predicate. Hot path: no allocation.
    #[inline]
    pub fn test(&self, rec: &ArchivedRecord) -> bool {
        self.test_fields(&rec.fields)
    }

    /// Whether a record's fields (`ArchivedRecord::fields`, or a row of cells seen as its
    /// archived values: [`Cell::as_archived`](crate::record::Cell::as_archived)) satisfy the
    /// predicate. Hot path.
    #[inline(always)]
    pub fn test_fields(&self, rec: &[ArchivedValue]) -> bool {
        match self.shape {
            PredShape::U64FieldConst(op, pos, c) => op.apply(&read_field::<u64>(rec, pos), &c),
            PredShape::I64FieldConst(op, pos, c) => op.apply(&read_field::<i64>(rec, pos), &c),
            PredShape::Tree => self.root.eval(rec),
        }
    }
}

#[cfg(test)]
mod tests;
