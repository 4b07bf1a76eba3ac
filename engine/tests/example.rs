//! The embedding example builds and gives the same counts as a plain sequential count.

#[path = "../examples/wordcount.rs"]
mod wordcount;

#[test]
fn wordcount_example_matches_a_sequential_count() {
    let got = wordcount::word_counts(2, 50);
    let mut want = std::collections::HashMap::new();
    for _ in 0..50 {
        for w in wordcount::TEXT.split_whitespace() {
            *want.entry(w.to_lowercase()).or_insert(0u64) += 1;
        }
    }
    assert_eq!(got, want);
}
