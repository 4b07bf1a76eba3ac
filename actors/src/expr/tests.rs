//! Tests of expression parsing, typing, error messages and evaluation.

use super::*;
use crate::record::{access, Record};
use crate::testkit::Rng;

fn schema() -> Schema {
    Schema::new(vec![
        ("price".into(), FieldType::U64),
        ("delta".into(), FieldType::I64),
        ("rate".into(), FieldType::F64),
        ("ok".into(), FieldType::Bool),
        ("name".into(), FieldType::Str),
    ])
}

fn values(price: u64, delta: i64, rate: f64, ok: bool, name: &str) -> Vec<Value> {
    vec![Value::U64(price), Value::I64(delta), Value::F64(rate), Value::Bool(ok), Value::Str(name.into())]
}

fn eval_on(src: &str, row: Vec<Value>) -> Value {
    let bytes = Record::from(row).to_archive();
    let expr = Expr::parse(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
    expr.eval(access(&bytes).unwrap())
}

fn eval(src: &str) -> Value {
    eval_on(src, values(10, -4, 0.5, true, "bob"))
}

fn error(src: &str) -> String {
    Expr::parse(src, &schema()).unwrap_err().to_string()
}

#[test]
fn precedence_and_associativity() {
    assert_eq!(eval("1 + 2 * 3"), Value::I64(7));
    assert_eq!(eval("(1 + 2) * 3"), Value::I64(9));
    assert_eq!(eval("10 - 4 - 3"), Value::I64(3));
    assert_eq!(eval("100 / 10 / 5"), Value::I64(2));
    assert_eq!(eval("-2 * 3 + 7 % 4"), Value::I64(-3));
    assert_eq!(eval("price - 3 * 2"), Value::U64(4));
    assert_eq!(eval("-delta * 2"), Value::I64(8));
    assert_eq!(eval("1 + 2 < 4 && 5 > 6 || ok"), Value::Bool(true));
    assert_eq!(eval("!ok || price == 10 && name == \"al\""), Value::Bool(false));
    assert_eq!(eval("!(price > 3)"), Value::Bool(false));
    assert_eq!(eval("ok == (price >= 10)"), Value::Bool(true));
}

#[test]
fn literals_take_the_type_they_meet_and_promote_to_f64() {
    assert_eq!(eval("price + 1"), Value::U64(11));
    assert_eq!(eval("delta + 1"), Value::I64(-3));
    assert_eq!(eval("rate + 1"), Value::F64(1.5));
    assert_eq!(eval("price * rate"), Value::F64(5.0));
    assert_eq!(eval("delta + 2.5e1"), Value::F64(21.0));
    assert_eq!(eval("18446744073709551615"), Value::U64(u64::MAX));
    assert_eq!(eval("\"x\\\"y\""), Value::Str("x\"y".into()));
    assert_eq!(eval("name"), Value::Str("bob".into()));
    assert_eq!(eval("name < \"carl\" && name != \"\""), Value::Bool(true));
}

#[test]
fn run_time_arithmetic_never_panics() {
    let row = || values(7, i64::MIN, 0.0, false, "");
    assert_eq!(eval_on("price / (price - 7)", row()), Value::U64(0));
    assert_eq!(eval_on("price % (price - 7)", row()), Value::U64(0));
    assert_eq!(eval_on("price - 8", row()), Value::U64(u64::MAX), "u64 wraps");
    assert_eq!(eval_on("delta / -1", row()), Value::I64(i64::MIN));
    assert_eq!(eval_on("delta % -1", row()), Value::I64(0));
    assert_eq!(eval_on("-delta", row()), Value::I64(i64::MIN));
    assert_eq!(eval_on("1.0 / rate", row()), Value::F64(f64::INFINITY));
    assert_eq!(eval("7 / 0 + price"), Value::U64(10), "constants fold with the same rule");
}

#[test]
fn type_errors_name_the_types_and_column() {
    assert_eq!(error("price + name"), "cannot add u64 and string at column 7");
    assert_eq!(error("price - delta"), "cannot subtract u64 and i64 at column 7");
    assert_eq!(error("ok * 2"), "cannot multiply bool and integer at column 4");
    assert_eq!(error("name < 3"), "cannot compare string and integer with `<` at column 6");
    assert_eq!(error("ok < ok"), "cannot compare bool and bool with `<` at column 4");
    assert_eq!(error("price && ok"), "`&&` needs bool, found u64 at column 7");
    assert_eq!(error("ok || 1"), "`||` needs bool, found integer at column 4");
    assert_eq!(error("!price"), "`!` needs a bool, found u64 at column 1");
    assert_eq!(error("-price"), "`-` needs a signed number (i64 or f64), found u64 at column 1");
    assert_eq!(error("price + -1"), "integer constant -1 does not fit in u64 at column 7");
    assert_eq!(error("prce * 2"), "unknown field `prce` at column 1; fields are: price, delta, rate, ok, name");
    let pred = Predicate::parse("price + 1", &schema()).unwrap_err();
    assert_eq!(pred.to_string(), "expression is u64, a predicate must be bool");
}

#[test]
fn syntax_errors_name_the_column() {
    assert_eq!(error("price +"), "expected an expression at column 8, found end of input");
    assert_eq!(error("(price + 1"), "expected `)` at column 11, found end of input");
    assert_eq!(error("price 1"), "expected an operator or the end at column 7, found number `1`");
    assert_eq!(error("price = 1"), "unexpected character `=` at column 7");
    assert_eq!(error("\"abc"), "unterminated string starting at column 1");
    assert_eq!(error("12ab"), "invalid number `12ab` at column 1");
    assert_eq!(error("99999999999999999999"), "invalid number `99999999999999999999` at column 1");
    assert_eq!(error(""), "expected an expression at column 1, found end of input");
}

/// Random arithmetic on i64 fields against Rust's own wrapping arithmetic.
#[test]
fn random_arithmetic_matches_a_direct_computation() {
    let schema = Schema::new(vec![("a".into(), FieldType::I64), ("b".into(), FieldType::I64)]);
    let expr = Expr::parse("a * 3 - b / (a % 5) + -b", &schema).unwrap();
    let pred = Predicate::parse("a < b || a % 2 == 0 && !(b >= 0)", &schema).unwrap();
    let mut rng = Rng(3);
    for _ in 0..2000 {
        let (a, b) = (rng.next_u64() as i64 >> rng.below(64), rng.next_u64() as i64);
        let bytes = Record::from(vec![Value::I64(a), Value::I64(b)]).to_archive();
        let rec = access(&bytes).unwrap();
        let rem = a.checked_rem(5).unwrap_or(0);
        let div = b.checked_div(rem).unwrap_or(if rem == 0 { 0 } else { b.wrapping_div(rem) });
        let want = a.wrapping_mul(3).wrapping_sub(div).wrapping_add(b.wrapping_neg());
        assert_eq!(expr.eval(rec), Value::I64(want), "a={a} b={b}");
        assert_eq!(pred.test(rec), a < b || (a % 2 == 0 && b < 0), "a={a} b={b}");
    }
}

#[test]
fn evaluation_in_place_matches_a_fresh_evaluation() {
    // A slot already of the result's type takes the inline path (`NumNode::eval_root`); a
    // fresh one the tree walk. Every shape the inline path special-cases, and deeper ones.
    let shapes = [
        "price",
        "delta",
        "rate",
        "7",
        "-3",
        "2.5",
        "price + 1",
        "1 - delta",
        "delta * delta",
        "price * rate",
        "rate / 2",
        "-delta",
        "-rate",
        "price % 7",
        "7 / price",
        "(price + 1) * 3",
        "price % 7 + price * 0 + 1",
        "rate * (rate - 1)",
        "price - 1",
        "price * 3",
        "price / 1000",
        "price / 0",
        "price % 0",
        "1 + price",
        "price > 1000",
        "ok",
    ];
    let mut rng = Rng(17);
    let row = |rng: &mut Rng| {
        let delta = rng.below(2001) as i64 - 1000;
        let rate = rng.below(1 << 20) as f64 / 1024.0;
        Record::from(values(rng.below(1 << 40), delta, rate, rng.below(2) == 1, "x")).to_archive()
    };
    for src in shapes {
        let expr = Expr::parse(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
        let first = row(&mut rng);
        let mut slot = expr.eval(access(&first).unwrap());
        for _ in 0..200 {
            let bytes = row(&mut rng);
            let rec = access(&bytes).unwrap();
            let fresh = expr.eval(rec);
            expr.eval_into(rec, &mut slot);
            assert_eq!(slot, fresh, "{src}");
            assert_eq!(slot.field_type(), expr.ty(), "{src}");
            // The scalar form (`ScalarExpr::eval_cell`, with its own paths for the common
            // shapes of u64 fields) makes the same value.
            let scalar = expr.clone().into_scalar().unwrap_or_else(|_| panic!("{src} is a scalar"));
            assert_eq!(scalar.eval_cell(rec).to_value(), fresh, "{src} as a cell");
        }
    }
}

#[test]
fn predicate_shapes_test_as_the_tree_evaluates() {
    // An integer field against a literal takes `Predicate::test_fields`'s shape path; the
    // others walk the tree. Both answer as the expression evaluates.
    let preds = [
        "price > 1000",
        "price <= 7",
        "price == 0",
        "price != 3",
        "price >= 549755813888",
        "delta < -5",
        "delta >= 0",
        "delta == -1000",
        "delta != 7",
        "delta > -1",
        "1000 < price",
        "price + 1 > 1000",
        "delta * 2 < delta",
        "ok",
        "rate > 0.5",
    ];
    let mut rng = Rng(29);
    for src in preds {
        let pred = Predicate::parse(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
        let expr = Expr::parse(src, &schema()).unwrap_or_else(|e| panic!("{src}: {e}"));
        let (mut held, mut failed) = (0, 0);
        for _ in 0..400 {
            let price = match rng.below(4) {
                0 => rng.below(8),
                1 => 1000 + rng.below(3) - 1,
                _ => rng.below(1 << 40),
            };
            let delta = match rng.below(4) {
                0 => rng.below(21) as i64 - 10,
                1 => -1000,
                _ => rng.below(2001) as i64 - 1000,
            };
            let rate = rng.below(1 << 20) as f64 / (1 << 20) as f64;
            let bytes = Record::from(values(price, delta, rate, rng.below(2) == 1, "x")).to_archive();
            let rec = access(&bytes).unwrap();
            let want = expr.eval(rec) == Value::Bool(true);
            assert_eq!(pred.test(rec), want, "{src}: price {price}, delta {delta}, rate {rate}");
            if want {
                held += 1;
            } else {
                failed += 1;
            }
        }
        assert!(held > 0, "{src} never held");
        assert!(failed > 0, "{src} never failed");
    }
}
