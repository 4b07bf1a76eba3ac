//! File replay: records read one at a time from an NDJSON or CSV file, bad lines reported and skipped.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use dirigo_actors::record::{Schema, Value};

/// How a replayed file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line, fields named as in the schema.
    Ndjson,
    /// Comma-separated cells in schema order; `header`: the first row names the fields.
    Csv { header: bool },
}

/// The format a file's extension implies: `.ndjson`, `.jsonl`, `.json` are NDJSON and `.csv` is
/// CSV with a header (case-insensitive). `None` for anything else.
pub fn format_from_path(path: &Path) -> Option<FileFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "ndjson" | "jsonl" | "json" => Some(FileFormat::Ndjson),
        "csv" => Some(FileFormat::Csv { header: true }),
        _ => None,
    }
}

/// Errors of a file source. [`SourceError::Line`] is an expected condition: the reader stays
/// usable and the next call continues with the next line.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: Arc<Path>, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: Arc<Path>, source: io::Error },
    #[error(
        "{}: the CSV header {found:?} does not match the schema fields {expected:?}",
        path.display()
    )]
    Header { path: Arc<Path>, expected: Vec<String>, found: Vec<String> },
    /// A malformed line: `line` is 1-based.
    #[error("{}:{line}: {message}", path.display())]
    Line { path: Arc<Path>, line: u64, message: String },
}

/// A malformed line or a failed read, before the path is attached.
enum Failure {
    Line { line: u64, message: String },
    Io(io::Error),
}

/// Reads the records of one file, in order, into a caller-owned buffer.
#[derive(Debug)]
pub struct FileReader {
    path: Arc<Path>,
    schema: Schema,
    decoder: Decoder,
}

/// Dispatch by format, once per record.
#[derive(Debug)]
enum Decoder {
    Ndjson(NdjsonDecoder),
    Csv(CsvDecoder),
}

impl FileReader {
    /// Open `path`; for CSV with a header, check that the header names the schema's fields in
    /// order.
    pub fn open(path: &Path, format: FileFormat, schema: &Schema) -> Result<FileReader, SourceError> {
        let path: Arc<Path> = Arc::from(path);
        let file = File::open(&path).map_err(|source| SourceError::Open { path: path.clone(), source })?;
        let decoder = match format {
            FileFormat::Ndjson => Decoder::Ndjson(NdjsonDecoder::new(file)),
            FileFormat::Csv { header } => {
                let mut csv = CsvDecoder::new(file);
                if header {
                    csv.check_header(schema, &path)?;
                }
                Decoder::Csv(csv)
            }
        };
        Ok(FileReader { path, schema: schema.clone(), decoder })
    }

    /// Next record into `values` (reused). `Ok(None)` at end of file. A malformed line gives
    /// [`SourceError::Line`] and the next call continues with the next line.
    pub fn next_record(&mut self, values: &mut Vec<Value>) -> Result<Option<()>, SourceError> {
        let next = match &mut self.decoder {
            Decoder::Ndjson(d) => d.next(&self.schema, values),
            Decoder::Csv(d) => d.next(&self.schema, values),
        };
        next.map_err(|failure| match failure {
            Failure::Line { line, message } => SourceError::Line { path: self.path.clone(), line, message },
            Failure::Io(source) => SourceError::Read { path: self.path.clone(), source },
        })
    }

    /// Lines consumed from the file so far, header, blank and bad lines included.
    pub fn lines_read(&self) -> u64 {
        match &self.decoder {
            Decoder::Ndjson(d) => d.lines,
            Decoder::Csv(d) => d.lines,
        }
    }

    /// The byte offset of the next unread line (or CSV row): a reader that [`seek`](Self::seek)s
    /// there reads exactly the records this one would read next.
    pub fn offset(&self) -> u64 {
        match &self.decoder {
            Decoder::Ndjson(d) => d.offset,
            Decoder::Csv(d) => d.reader.position().byte().max(d.data_start),
        }
    }

    /// Go on from byte `offset` (from [`offset`](Self::offset)), after `line` lines (from
    /// [`lines_read`](Self::lines_read), so that later line numbers stay right). An offset
    /// before a CSV header's end means the first record.
    pub fn seek(&mut self, offset: u64, line: u64) -> Result<(), super::PositionError> {
        let fail =
            |reason: String| super::PositionError::Seek { path: self.path.display().to_string(), offset, reason };
        let len = std::fs::metadata(&self.path).map_err(|e| fail(e.to_string()))?.len();
        if offset > len {
            return Err(fail(format!("the file is only {len} bytes long")));
        }
        match &mut self.decoder {
            Decoder::Ndjson(d) => {
                d.reader.seek(SeekFrom::Start(offset)).map_err(|e| fail(e.to_string()))?;
                (d.offset, d.lines) = (offset, line);
            }
            Decoder::Csv(d) => {
                let offset = offset.max(d.data_start);
                let mut at = csv::Position::new();
                at.set_byte(offset).set_line(line + 1);
                d.reader.seek(at).map_err(|e| fail(e.to_string()))?;
                d.lines = line;
            }
        }
        Ok(())
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// NDJSON: buffered lines into a reused byte buffer (bytes, so that a line that is not UTF-8 is
/// reported and skipped like any other bad line).
#[derive(Debug)]
struct NdjsonDecoder {
    reader: BufReader<File>,
    line: Vec<u8>,
    lines: u64,
    /// Bytes consumed so far: where the next line starts.
    offset: u64,
}

impl NdjsonDecoder {
    fn new(file: File) -> NdjsonDecoder {
        let reader = BufReader::with_capacity(64 * 1024, file);
        NdjsonDecoder { reader, line: Vec::with_capacity(256), lines: 0, offset: 0 }
    }

    fn next(&mut self, schema: &Schema, values: &mut Vec<Value>) -> Result<Option<()>, Failure> {
        loop {
            self.line.clear();
            let read = self.reader.read_until(b'\n', &mut self.line).map_err(Failure::Io)?;
            if read == 0 {
                return Ok(None);
            }
            self.offset += read as u64;
            self.lines += 1;
            let text = std::str::from_utf8(&self.line)
                .map_err(|e| Failure::Line { line: self.lines, message: format!("line is not UTF-8: {e}") })?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let mut parsed =
                schema.parse_json(text).map_err(|e| Failure::Line { line: self.lines, message: e.to_string() })?;
            values.clear();
            values.append(&mut parsed);
            return Ok(Some(()));
        }
    }
}

/// CSV through the `csv` crate (quoted cells may span lines), one reused row.
#[derive(Debug)]
struct CsvDecoder {
    reader: csv::Reader<File>,
    row: csv::StringRecord,
    lines: u64,
    /// Where the first record starts (after the header, if any).
    data_start: u64,
}

impl CsvDecoder {
    fn new(file: File) -> CsvDecoder {
        let reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
        CsvDecoder { reader, row: csv::StringRecord::new(), lines: 0, data_start: 0 }
    }

    /// Read the first row and compare it with the schema's names. An empty file has no header
    /// and no records.
    fn check_header(&mut self, schema: &Schema, path: &Arc<Path>) -> Result<(), SourceError> {
        let read = self.read_row().map_err(|failure| match failure {
            Failure::Io(source) => SourceError::Read { path: path.clone(), source },
            Failure::Line { line, message } => SourceError::Line { path: path.clone(), line, message },
        })?;
        let found: Vec<String> = self.row.iter().map(|c| c.trim().to_owned()).collect();
        let expected: Vec<String> = schema.fields().map(|(n, _)| n.to_owned()).collect();
        self.data_start = self.reader.position().byte();
        match !read || found == expected {
            true => Ok(()),
            false => Err(SourceError::Header { path: path.clone(), expected, found }),
        }
    }

    fn next(&mut self, schema: &Schema, values: &mut Vec<Value>) -> Result<Option<()>, Failure> {
        loop {
            if !self.read_row()? {
                return Ok(None);
            }
            if self.row.len() == 1 && self.row[0].trim().is_empty() {
                continue;
            }
            let mut parsed = schema
                .parse_csv_row(self.row.iter())
                .map_err(|e| Failure::Line { line: self.row_line(), message: e.to_string() })?;
            values.clear();
            values.append(&mut parsed);
            return Ok(Some(()));
        }
    }

    /// The next row into `self.row`; `false` at end of file.
    fn read_row(&mut self) -> Result<bool, Failure> {
        let read = self.reader.read_record(&mut self.row);
        self.lines = self.lines.max(self.consumed_lines());
        if let Ok(true) = read {
            self.lines = self.lines.max(self.row_line()); // a last line without a newline
        }
        read.map_err(|e| {
            let line = e.position().map_or(self.lines, |p| p.line());
            let message = e.to_string();
            match e.into_kind() {
                csv::ErrorKind::Io(source) => Failure::Io(source),
                _ => Failure::Line { line, message },
            }
        })
    }

    /// The 1-based line the current row starts on.
    fn row_line(&self) -> u64 {
        self.row.position().map_or(self.lines, |p| p.line())
    }

    /// Lines ended by a newline the parser has consumed so far.
    fn consumed_lines(&self) -> u64 {
        self.reader.position().line() - 1
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use dirigo_actors::record::FieldType;

    use super::*;

    /// A file in the temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(ext: &str, contents: &[u8]) -> TempFile {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("dirigo-source-{}-{n}.{ext}", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).expect("temp file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn schema() -> Schema {
        Schema::new(vec![
            ("id".into(), FieldType::U64),
            ("name".into(), FieldType::Str),
            ("score".into(), FieldType::F64),
        ])
    }

    /// Every outcome of a reader until end of file: a record, or the line of a bad one.
    fn outcomes(reader: &mut FileReader) -> Vec<Result<Vec<Value>, u64>> {
        let mut out = Vec::new();
        let mut values = Vec::new();
        loop {
            match reader.next_record(&mut values) {
                Ok(Some(())) => out.push(Ok(values.clone())),
                Ok(None) => return out,
                Err(SourceError::Line { line, path, message }) => {
                    assert_eq!(*path, *reader.path());
                    assert!(!message.is_empty());
                    out.push(Err(line));
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
    }

    fn row(id: u64, name: &str, score: f64) -> Result<Vec<Value>, u64> {
        Ok(vec![Value::U64(id), Value::Str(name.into()), Value::F64(score)])
    }

    #[test]
    fn ndjson_round_trip_skips_blank_lines() {
        let text = "{\"id\":1,\"name\":\"a\",\"score\":0.5}\n\n  \r\n{\"id\":2,\"name\":\"b\",\"score\":3}\r\n";
        let file = TempFile::new("ndjson", text.as_bytes());
        let mut reader = FileReader::open(&file.0, FileFormat::Ndjson, &schema()).unwrap();
        assert_eq!(outcomes(&mut reader), [row(1, "a", 0.5), row(2, "b", 3.0)]);
        assert_eq!(reader.lines_read(), 4);
    }

    #[test]
    fn ndjson_bad_lines_are_reported_and_skipped() {
        let mut text = b"{\"id\":1,\"name\":\"a\",\"score\":1}\n{\"id\":-1,\"name\":\"a\",\"score\":1}\n".to_vec();
        text.extend_from_slice(b"\xff\xfe\n{\"id\":1}\nnot json\n{\"id\":4,\"name\":\"d\",\"score\":2}");
        let file = TempFile::new("jsonl", &text);
        let mut reader = FileReader::open(&file.0, FileFormat::Ndjson, &schema()).unwrap();
        let expected = [row(1, "a", 1.0), Err(2), Err(3), Err(4), Err(5), row(4, "d", 2.0)];
        assert_eq!(outcomes(&mut reader), expected);
        assert_eq!(reader.lines_read(), 6);
    }

    #[test]
    fn a_line_error_names_file_line_and_problem() {
        let file = TempFile::new("ndjson", b"\n{\"id\":1,\"name\":\"a\"}\n");
        let mut reader = FileReader::open(&file.0, FileFormat::Ndjson, &schema()).unwrap();
        let err = reader.next_record(&mut Vec::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("{}:2: ", file.0.display())), "{text}");
        assert!(text.contains("`score` is missing"), "{text}");
    }

    #[test]
    fn csv_round_trip_with_header_quotes_and_blank_lines() {
        let text = "id, name ,score\n1,a,0.5\n\n2,\"b, \"\"quoted\"\"\nline\",3\n3,c,1e3\n";
        let file = TempFile::new("csv", text.as_bytes());
        let format = format_from_path(&file.0).unwrap();
        let mut reader = FileReader::open(&file.0, format, &schema()).unwrap();
        let expected = [row(1, "a", 0.5), row(2, "b, \"quoted\"\nline", 3.0), row(3, "c", 1000.0)];
        assert_eq!(outcomes(&mut reader), expected);
        assert_eq!(reader.lines_read(), 6);
    }

    #[test]
    fn csv_bad_rows_are_reported_with_their_line_and_skipped() {
        let text = b"1,a,0.5\nx,b,1\n2,b\n3,\xff,1\n4,d,2,9\n5,e,2.5\n";
        let file = TempFile::new("csv", text);
        let format = FileFormat::Csv { header: false };
        let mut reader = FileReader::open(&file.0, format, &schema()).unwrap();
        let expected = [row(1, "a", 0.5), Err(2), Err(3), Err(4), Err(5), row(5, "e", 2.5)];
        assert_eq!(outcomes(&mut reader), expected);
    }

    #[test]
    fn csv_header_must_name_the_schema_in_order() {
        let file = TempFile::new("csv", b"id,score,name\n1,2,a\n");
        let err = FileReader::open(&file.0, FileFormat::Csv { header: true }, &schema());
        let Err(SourceError::Header { expected, found, .. }) = err else { panic!("header mismatch expected") };
        assert_eq!(expected, ["id", "name", "score"]);
        assert_eq!(found, ["id", "score", "name"]);
        let empty = TempFile::new("csv", b"");
        let mut reader = FileReader::open(&empty.0, FileFormat::Csv { header: true }, &schema());
        assert_eq!(reader.as_mut().unwrap().next_record(&mut Vec::new()).unwrap(), None);
    }

    #[test]
    fn a_missing_file_is_named() {
        let path = std::env::temp_dir().join("dirigo-source-no-such-file.ndjson");
        let err = FileReader::open(&path, FileFormat::Ndjson, &schema()).unwrap_err();
        assert!(matches!(&err, SourceError::Open { path: p, .. } if **p == *path));
        assert!(err.to_string().contains("dirigo-source-no-such-file.ndjson"));
    }

    #[test]
    fn formats_follow_extensions() {
        let format = |p: &str| format_from_path(Path::new(p));
        assert_eq!(format("a/b.ndjson"), Some(FileFormat::Ndjson));
        assert_eq!(format("b.JSONL"), Some(FileFormat::Ndjson));
        assert_eq!(format("b.json"), Some(FileFormat::Ndjson));
        assert_eq!(format("b.csv"), Some(FileFormat::Csv { header: true }));
        assert_eq!(format("b.txt"), None);
        assert_eq!(format("csv"), None);
    }
}
