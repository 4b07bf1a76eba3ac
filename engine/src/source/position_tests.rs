//! Replay from a position: read N events, take the position, build a fresh instance from it; the
//! two reads together equal one uninterrupted read, for every replayable kind.

use std::path::PathBuf;
use std::time::Duration;

use dirigo_actors::record::{FieldType, Schema, Value};
use dirigo_net::ingress::Produced;
use rkyv::util::AlignedVec;

use super::{
    Burst, FileFormat, FileReader, Generator, GeneratorSpec, KeyDistribution, PositionError, SourceInstance,
    SourcePosition,
};

/// Every outcome of `source` until it ends (at most `limit`): the values of a record, or None for
/// a skipped line.
fn read(source: &mut SourceInstance, limit: usize) -> Vec<Option<Vec<Value>>> {
    let (mut values, mut bytes) = (Vec::new(), AlignedVec::new());
    let mut out = Vec::new();
    while out.len() < limit {
        match source.produce(&mut values, &mut bytes) {
            Some(Produced::Values { .. }) => out.push(Some(values.clone())),
            Some(Produced::Skipped) => out.push(None),
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    out
}

/// For every split point: read `n`, take the position (through its rkyv bytes, as a snapshot
/// keeps it), resume a fresh instance, read the rest; equal to the whole read.
fn check_resume(make: impl Fn() -> SourceInstance) {
    let whole = read(&mut make(), usize::MAX);
    assert!(whole.len() > 3, "the source has too little to split");
    for n in 0..=whole.len() {
        let mut first = make();
        let mut head = read(&mut first, n);
        let position = SourcePosition::from_bytes(&first.position().to_bytes()).expect("round trip");
        assert_eq!(position, first.position());
        let mut second = make();
        second.seek(&position).expect("a position of the same source applies");
        head.extend(read(&mut second, usize::MAX));
        assert_eq!(head, whole, "split after {n}");
    }
}

fn generator_spec(rate: u64, instance: u32, parallelism: u32) -> GeneratorSpec {
    GeneratorSpec {
        rate,
        events: Some(60),
        duration: None,
        keys: 10,
        key_field: 0,
        distribution: KeyDistribution::Zipf { s: 1.1 },
        seed: 99,
        bursts: vec![],
        event_time_field: Some(1),
        instance,
        parallelism,
    }
}

fn generator_schema() -> Schema {
    Schema::new(vec![("key".into(), FieldType::U64), ("ts".into(), FieldType::U64), ("s".into(), FieldType::Str)])
}

#[test]
fn a_generator_resumes_exactly_from_its_position() {
    let burst = Burst { at: Duration::from_millis(5), duration: Duration::from_millis(5), rate: 10_000 };
    for (rate, instance, parallelism) in [(0, 0, 1), (1000, 0, 1), (1000, 1, 3)] {
        let mut spec = generator_spec(rate, instance, parallelism);
        if rate > 0 {
            spec.bursts = vec![burst.clone()];
        }
        let make = || SourceInstance::Generator(Generator::new(spec.clone(), &generator_schema()).unwrap());
        check_resume(make);
        // The schedule resumes too: the next event is due when it would have been.
        let mut a = make();
        read(&mut a, 7);
        let mut b = make();
        b.seek(&a.position()).unwrap();
        assert_eq!(a.next_due_ns(), b.next_due_ns());
    }
}

#[test]
fn a_generator_refuses_a_position_of_another_seed_or_instance() {
    let schema = generator_schema();
    let mut g = Generator::new(generator_spec(0, 1, 3), &schema).unwrap();
    let err = g.seek(&SourcePosition::Generator { seed: 1, next: Some(4), produced: 1 }).unwrap_err();
    assert_eq!(err, PositionError::Seed { expected: 99, found: 1 });
    let err = g.seek(&SourcePosition::Generator { seed: 99, next: Some(5), produced: 1 }).unwrap_err();
    assert_eq!(err, PositionError::Instance { next: 5, instance: 1, parallelism: 3 });
    let file = SourcePosition::File { offset: 0, line: 0, produced: 0 };
    assert!(matches!(g.seek(&file), Err(PositionError::WrongKind { found: "file", .. })));
    // A finished generator stays finished.
    g.seek(&SourcePosition::Generator { seed: 99, next: None, produced: 20 }).unwrap();
    assert_eq!(g.next_due_ns(), None);
}

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("dirigo-position-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file_schema() -> Schema {
    Schema::new(vec![("id".into(), FieldType::U64), ("name".into(), FieldType::Str)])
}

fn file_source(path: &std::path::Path, format: FileFormat) -> SourceInstance {
    let reader = FileReader::open(path, format, &file_schema()).unwrap();
    SourceInstance::File { reader, rate: 0, produced: 0 }
}

#[test]
fn an_ndjson_file_resumes_exactly_from_its_position() {
    let text = "{\"id\":1,\"name\":\"a\"}\n\n{\"id\":2,\"name\":\"bé\"}\r\nnot json\n{\"id\":3,\"name\":\"c\"}\n\
                {\"id\":4,\"name\":\"d\"}\n{\"id\":5,\"name\":\"e\"}";
    let file = TempFile::new("a.ndjson", text.as_bytes());
    check_resume(|| file_source(&file.0, FileFormat::Ndjson));
    // Line numbers carry on from the position.
    let mut a = file_source(&file.0, FileFormat::Ndjson);
    read(&mut a, 2);
    let mut b = file_source(&file.0, FileFormat::Ndjson);
    b.seek(&a.position()).unwrap();
    let SourceInstance::File { reader, .. } = &mut b else { unreachable!() };
    let err = reader.next_record(&mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains(":4: "), "{err}");
}

#[test]
fn a_csv_file_resumes_exactly_from_its_position() {
    let text = "id,name\n1,a\n2,\"b,\nmultiline\"\n\nx,bad\n3,c\n4,d\n";
    let file = TempFile::new("a.csv", text.as_bytes());
    check_resume(|| file_source(&file.0, FileFormat::Csv { header: true }));
    let bare = TempFile::new("b.csv", b"1,a\n2,b\n3,c\n4,d\n5,e");
    check_resume(|| file_source(&bare.0, FileFormat::Csv { header: false }));
}

#[test]
fn a_file_position_past_the_end_is_refused() {
    let file = TempFile::new("short.ndjson", b"{\"id\":1,\"name\":\"a\"}\n");
    let mut source = file_source(&file.0, FileFormat::Ndjson);
    let err = source.seek(&SourcePosition::File { offset: 1000, line: 9, produced: 9 }).unwrap_err();
    assert!(err.to_string().contains("only 20 bytes long"), "{err}");
}
