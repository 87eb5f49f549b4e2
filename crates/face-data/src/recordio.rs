//! insightface's RecordIO (`train.rec` + `train.idx`) without MXNet: dmlc record framing, the
//! `IRHeader`, insightface's layout (record 0 says where images and identities are) and plain
//! `im2rec` output; memory-mapped random access; a writer and converters to and from folders.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{
    dataset::{decode, FaceDataset, FaceSample},
    error::{io, DataError, Result},
    folder::ImageFolder,
    modality::{companion, companions_present, decode_plane, Modality},
};

/// dmlc-core's record magic.
pub const MAGIC: u32 = 0xced7_230a;
const LENGTH_MASK: u32 = (1 << 29) - 1;

/// Splits one (possibly multi-part) record starting at `offset`: returns the payload and the
/// offset of the next record. Parts are joined with the magic bytes the writer cut out.
pub fn read_record(data: &[u8], offset: usize) -> std::result::Result<(Vec<u8>, usize), String> {
    let mut payload = Vec::new();
    let mut at = offset;
    let mut first = true;
    loop {
        let head = data
            .get(at..at + 8)
            .ok_or_else(|| format!("truncated record header at byte {at}"))?;
        let magic = u32::from_le_bytes(head[0..4].try_into().unwrap());
        if magic != MAGIC {
            return Err(format!(
                "bad magic {magic:#010x} at byte {at} (expected {MAGIC:#010x})"
            ));
        }
        let lrec = u32::from_le_bytes(head[4..8].try_into().unwrap());
        let (cflag, len) = (lrec >> 29, (lrec & LENGTH_MASK) as usize);
        let body = data.get(at + 8..at + 8 + len).ok_or_else(|| {
            format!("record part at byte {at} claims {len} bytes past the end of the file")
        })?;
        match (first, cflag) {
            (true, 0) | (true, 1) | (false, 2) | (false, 3) => {}
            _ => return Err(format!("unexpected continuation flag {cflag} at byte {at}")),
        }
        if !first {
            payload.extend_from_slice(&MAGIC.to_le_bytes());
        }
        payload.extend_from_slice(body);
        at += 8 + ((len + 3) & !3);
        if cflag == 0 || cflag == 3 {
            return Ok((payload, at));
        }
        first = false;
    }
}

/// Frames `payload` as dmlc's `RecordIOWriter::WriteRecord` does: wherever the magic occurs at a
/// 4-byte-aligned offset it is cut out and the record continues in a new part; the last part
/// is zero-padded to 4 bytes.
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let magic = MAGIC.to_le_bytes();
    let len = payload.len();
    let mut start = 0usize;
    let mut i = 0usize;
    while i + 4 <= len & !3 {
        if payload[i..i + 4] == magic {
            let flag = if start == 0 { 1u32 } else { 2 };
            out.extend_from_slice(&magic);
            out.extend_from_slice(&((flag << 29) | (i - start) as u32).to_le_bytes());
            out.extend_from_slice(&payload[start..i]);
            start = i + 4;
        }
        i += 4;
    }
    let flag = if start != 0 { 3u32 } else { 0 };
    out.extend_from_slice(&magic);
    out.extend_from_slice(&((flag << 29) | (len - start) as u32).to_le_bytes());
    out.extend_from_slice(&payload[start..]);
    out.resize(out.len() + ((len + 3) & !3) - len, 0);
}

/// MXNet's `IRHeader`: `flag`, `label`, `id`, `id2` (little-endian `IfQQ`, 24 bytes). When
/// `flag > 0`, `flag` f32 labels follow it and `label` is unused.
#[derive(Debug, Clone, PartialEq)]
pub struct IrHeader {
    /// How many labels follow the header (0: `label` is the only one).
    pub flag: u32,
    /// The label when `flag` is 0.
    pub label: f32,
    /// MXNet's record id.
    pub id: u64,
    /// MXNet's second id.
    pub id2: u64,
    /// The labels after the header when `flag > 0`.
    pub labels: Vec<f32>,
}

impl IrHeader {
    /// Bytes of the fixed part.
    pub const SIZE: usize = 24;

    /// A single-label image header.
    pub fn image(label: usize, id: u64) -> Self {
        Self {
            flag: 0,
            label: label as f32,
            id,
            id2: 0,
            labels: Vec::new(),
        }
    }

    /// A header carrying several labels (insightface's record 0 and identity records).
    pub fn with_labels(labels: Vec<f32>) -> Self {
        Self {
            flag: labels.len() as u32,
            label: 0.0,
            id: 0,
            id2: 0,
            labels,
        }
    }

    /// The record's class: `label`, or the first of `labels` when there are several.
    pub fn class(&self) -> f32 {
        self.labels.first().copied().unwrap_or(self.label)
    }

    /// MXNet's `recordio.pack`: header, labels, then the payload.
    pub fn pack(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::SIZE + 4 * self.labels.len() + payload.len());
        out.extend_from_slice(&(self.labels.len().max(self.flag as usize) as u32).to_le_bytes());
        out.extend_from_slice(&self.label.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.id2.to_le_bytes());
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    /// MXNet's `recordio.unpack`: the header and the payload after it.
    pub fn unpack(record: &[u8]) -> std::result::Result<(Self, &[u8]), String> {
        if record.len() < Self::SIZE {
            return Err(format!(
                "record of {} bytes is shorter than its 24-byte header",
                record.len()
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(record[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(record[i..i + 8].try_into().unwrap());
        let flag = u32_at(0);
        let label = f32::from_le_bytes(record[4..8].try_into().unwrap());
        let n = flag as usize;
        let end = Self::SIZE
            .checked_add(n.checked_mul(4).ok_or("label count overflows")?)
            .ok_or("label count overflows")?;
        if record.len() < end {
            return Err(format!(
                "header says {n} labels but the record has {} bytes",
                record.len()
            ));
        }
        let labels = (0..n)
            .map(|k| {
                f32::from_le_bytes(
                    record[Self::SIZE + 4 * k..Self::SIZE + 4 * k + 4]
                        .try_into()
                        .unwrap(),
                )
            })
            .collect();
        Ok((
            Self {
                flag,
                label,
                id: u64_at(8),
                id2: u64_at(16),
                labels,
            },
            &record[end..],
        ))
    }
}

/// A memory-mapped `.rec` with its `.idx` (`key\toffset` per line).
pub struct RecordFile {
    path: PathBuf,
    data: Mmap,
    offsets: HashMap<u64, u64>,
    keys: Vec<u64>,
}

impl std::fmt::Debug for RecordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFile")
            .field("path", &self.path)
            .field("records", &self.keys.len())
            .finish()
    }
}

/// The `.idx` beside a `.rec`.
pub fn index_path(rec: &Path) -> PathBuf {
    rec.with_extension("idx")
}

/// Parses `.idx` text; every offset must point inside a file of `file_len` bytes.
pub fn parse_index(text: &str, path: &Path, file_len: u64) -> Result<Vec<(u64, u64)>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Index {
            path: path.to_path_buf(),
            line: n + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(k), Some(o), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("expected `key<TAB>offset`, got {line:?}")));
        };
        let key = k
            .parse::<u64>()
            .map_err(|e| bad(format!("key {k:?}: {e}")))?;
        let offset = o
            .parse::<u64>()
            .map_err(|e| bad(format!("offset {o:?}: {e}")))?;
        if offset.saturating_add(8) > file_len {
            return Err(bad(format!(
                "offset {offset} points past the end of the .rec ({file_len} bytes)"
            )));
        }
        entries.push((key, offset));
    }
    Ok(entries)
}

impl RecordFile {
    /// Opens `rec` and the `.idx` beside it.
    pub fn open(rec: impl AsRef<Path>) -> Result<Self> {
        let path = rec.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io(&path))?;
        // SAFETY: the file is opened read-only; like any mmap reader we assume it is not
        // truncated by another process while mapped.
        let data = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        let idx = index_path(&path);
        let text = std::fs::read_to_string(&idx).map_err(io(&idx))?;
        let entries = parse_index(&text, &idx, data.len() as u64)?;
        let keys = entries.iter().map(|e| e.0).collect();
        Ok(Self {
            path,
            data,
            offsets: entries.into_iter().collect(),
            keys,
        })
    }

    /// The `.rec` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys in `.idx` order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The payload of record `key`.
    pub fn read(&self, key: u64) -> Result<Vec<u8>> {
        let offset = *self
            .offsets
            .get(&key)
            .ok_or_else(|| DataError::MissingKey {
                path: self.path.clone(),
                key,
            })?;
        read_record(&self.data, offset as usize)
            .map(|(payload, _)| payload)
            .map_err(|reason| DataError::Record {
                path: self.path.clone(),
                offset,
                reason: format!("key {key}: {reason}"),
            })
    }

    /// Header and payload of record `key`.
    pub fn read_unpacked(&self, key: u64) -> Result<(IrHeader, Vec<u8>)> {
        let record = self.read(key)?;
        let (header, payload) = IrHeader::unpack(&record).map_err(|reason| DataError::Record {
            path: self.path.clone(),
            offset: self.offsets[&key],
            reason: format!("key {key}: {reason}"),
        })?;
        Ok((header, payload.to_vec()))
    }
}

/// A `.rec` as a labelled face dataset: insightface's layout or plain `im2rec` output.
#[derive(Debug)]
pub struct RecordDataset {
    file: RecordFile,
    /// (key, label) of every image, in key order.
    samples: Vec<(u64, usize)>,
    num_identities: usize,
    insightface_layout: bool,
    /// Identity names from `names.json` beside the file, when it names every identity.
    names: Option<Vec<String>>,
    /// NIR and depth images in companion files beside it (`train.nir.rec`, same keys).
    extra: Vec<(Modality, RecordFile)>,
}

/// A label stored as f32 read as a record key or class index: finite, whole, not negative and
/// below 2^24, past which f32 cannot hold consecutive integers (so no real file has one, and a
/// damaged one cannot make us allocate for billions of classes or records).
fn whole_index(v: f32) -> Option<u64> {
    const EXACT: f32 = (1u32 << 24) as f32;
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < EXACT).then_some(v as u64)
}

fn label_of(header: &IrHeader, file: &RecordFile, key: u64) -> Result<usize> {
    let c = header.class();
    whole_index(c)
        .map(|c| c as usize)
        .ok_or_else(|| DataError::Record {
            path: file.path.clone(),
            offset: file.offsets[&key],
            reason: format!("key {key}: label {c} is not a class index (below 2^24)"),
        })
}

/// insightface's layout from record 0's labels `[a, b]`, checked against the file: image keys
/// `1..a` and identity keys `a..b` must be records it can hold.
fn layout_of(head: &IrHeader, file: &RecordFile) -> Result<Option<(u64, u64)>> {
    if head.flag == 0 || head.labels.len() < 2 {
        return Ok(None);
    }
    let (a, b) = match (whole_index(head.labels[0]), whole_index(head.labels[1])) {
        (Some(a), Some(b)) if a >= 1 && b >= a => (a, b),
        _ => return Ok(None),
    };
    // Keys 0..b are records of the file, so b cannot pass their count: what is allocated for
    // them is bounded by the file itself, whatever the header says.
    let records = file.keys.len() as u64;
    if b > records {
        return Err(DataError::Record {
            path: file.path.clone(),
            offset: file.offsets[&0],
            reason: format!(
                "record 0 says identities end at key {b}, but the file holds {records} records \
                 (its last key is {})",
                file.keys.last().copied().unwrap_or(0)
            ),
        });
    }
    Ok(Some((a, b)))
}

/// An identity record's `[start, end)` image keys, inside `1..a`.
fn identity_range(h: &IrHeader, file: &RecordFile, key: u64, a: u64) -> Result<(u64, u64)> {
    let range = match h.labels.as_slice() {
        [s, e, ..] => whole_index(*s).zip(whole_index(*e)),
        _ => None,
    };
    match range {
        Some((start, end)) if start >= 1 && start <= end && end <= a => Ok((start, end)),
        _ => Err(DataError::Record {
            path: file.path.clone(),
            offset: file.offsets[&key],
            reason: format!(
                "identity record {key} has no [start, end) image keys inside 1..{a}: {:?}",
                h.labels
            ),
        }),
    }
}

impl RecordDataset {
    /// Opens `train.rec` (+ `train.idx`). With insightface's layout (record 0's labels `[a, b]`:
    /// images are keys `1..a`, identity records `a..b` give each identity's image range) labels
    /// come from the identity records without touching the images; otherwise every record is an
    /// image and its header's label is read.
    pub fn open(rec: impl AsRef<Path>) -> Result<Self> {
        let file = RecordFile::open(rec)?;
        let head = if file.offsets.contains_key(&0) {
            Some(file.read_unpacked(0)?.0)
        } else {
            None
        };
        let layout = match &head {
            Some(h) => layout_of(h, &file)?,
            None => None,
        };
        let (samples, num_identities) = match layout {
            Some((a, b)) => {
                let mut samples = Vec::with_capacity((a - 1) as usize);
                if b > a {
                    for (label, id_key) in (a..b).enumerate() {
                        let (h, _) = file.read_unpacked(id_key)?;
                        let (start, end) = identity_range(&h, &file, id_key, a)?;
                        // Ranges tile 1..a: more images than that means they overlap (and a
                        // damaged file could otherwise claim billions).
                        if samples.len() as u64 + (end - start) > a - 1 {
                            return Err(DataError::Record {
                                path: file.path.clone(),
                                offset: file.offsets[&id_key],
                                reason: format!(
                                    "identity records claim more than the {} images of keys 1..{a}",
                                    a - 1
                                ),
                            });
                        }
                        samples.extend((start..end).map(|k| (k, label)));
                    }
                } else {
                    for key in 1..a {
                        let (h, _) = file.read_unpacked(key)?;
                        samples.push((key, label_of(&h, &file, key)?));
                    }
                }
                samples.sort_unstable();
                let ids = if b > a {
                    (b - a) as usize
                } else {
                    samples.iter().map(|s| s.1 + 1).max().unwrap_or(0)
                };
                (samples, ids)
            }
            None => {
                let mut samples = Vec::with_capacity(file.keys.len());
                for &key in &file.keys {
                    let (h, _) = file.read_unpacked(key)?;
                    samples.push((key, label_of(&h, &file, key)?));
                }
                let ids = samples.iter().map(|s| s.1 + 1).max().unwrap_or(0);
                (samples, ids)
            }
        };
        for &(key, _) in &samples {
            if !file.offsets.contains_key(&key) {
                return Err(DataError::MissingKey {
                    path: file.path.clone(),
                    key,
                });
            }
        }
        let names = read_names(&names_path(&file.path)).filter(|n| n.len() == num_identities);
        let extra = (companions_present(&file.path).into_iter())
            .map(|m| Ok((m, RecordFile::open(companion(&file.path, m))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            file,
            samples,
            num_identities,
            insightface_layout: layout.is_some(),
            names,
            extra,
        })
    }

    /// The underlying record file.
    pub fn file(&self) -> &RecordFile {
        &self.file
    }

    /// Whether record 0 described the layout (insightface) or every record is an image.
    pub fn insightface_layout(&self) -> bool {
        self.insightface_layout
    }

    /// Record key of sample `index`.
    pub fn key(&self, index: usize) -> Result<u64> {
        self.check_index(index)?;
        Ok(self.samples[index].0)
    }

    /// The encoded image bytes of sample `index`, as stored.
    pub fn raw(&self, index: usize) -> Result<Vec<u8>> {
        let key = self.key(index)?;
        Ok(self.file.read_unpacked(key)?.1)
    }
}

impl FaceDataset for RecordDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn num_identities(&self) -> usize {
        self.num_identities
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.check_index(index)?;
        Ok(self.samples[index].1)
    }

    fn get(&self, index: usize) -> Result<FaceSample> {
        let bytes = self.raw(index)?;
        let (key, label) = self.samples[index];
        let mut sample = FaceSample::new(decode(&bytes, &self.file.path, index)?, label);
        for (m, file) in &self.extra {
            let bytes = file.read_unpacked(key)?.1;
            sample.set_plane(*m, decode_plane(&bytes, &file.path, index)?);
        }
        Ok(sample)
    }

    fn source(&self) -> PathBuf {
        self.file.path.clone()
    }

    fn identity_name(&self, label: usize) -> Option<String> {
        self.names.as_ref()?.get(label).cloned()
    }
}

/// The identity names of a label map or `names.json` (`{"identities": [...]}`), if the file
/// is there and holds them.
pub fn read_names(path: &Path) -> Option<Vec<String>> {
    let bytes = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    (value["identities"].as_array()?.iter())
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Writes `.rec` + `.idx` through `atomic_file`, each moved into place by
/// [`RecordWriter::finish`] (the `.idx` last, so an index never points past its records).
pub struct RecordWriter {
    rec: PathBuf,
    out: atomic_file::AtomicFile,
    offset: u64,
    index: String,
    buf: Vec<u8>,
}

impl RecordWriter {
    /// Starts `rec` (and its `.idx`), written atomically when finished.
    pub fn create(rec: impl AsRef<Path>) -> Result<Self> {
        let rec = rec.as_ref().to_path_buf();
        let out = atomic_file::AtomicFile::create(&rec).map_err(io(&rec))?;
        Ok(Self {
            rec,
            out,
            offset: 0,
            index: String::new(),
            buf: Vec::new(),
        })
    }

    /// Appends a record under `key`.
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<()> {
        self.buf.clear();
        frame_record(payload, &mut self.buf);
        self.out.write_all(&self.buf).map_err(io(&self.rec))?;
        self.index.push_str(&format!("{key}\t{}\n", self.offset));
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Flushes both files and moves them into place.
    pub fn finish(self) -> Result<()> {
        self.out.commit().map_err(io(&self.rec))?;
        let idx = index_path(&self.rec);
        atomic_file::write(&idx, self.index.as_bytes()).map_err(io(&idx))
    }
}

/// insightface's layout for `n` images of `identities` identities: record 0 `[a, b]`, images at
/// keys `1..a` (`image(i)` gives sample `i`'s label and encoded bytes; header id = key), then one
/// identity record per identity at `a..b` with its `[start, end)` image keys.
fn write_insightface_layout(
    rec: &Path,
    n: usize,
    identities: usize,
    mut image: impl FnMut(usize) -> Result<(usize, Vec<u8>)>,
) -> Result<()> {
    let a = n as u64 + 1;
    let b = a + identities as u64;
    let mut w = RecordWriter::create(rec)?;
    w.write(
        0,
        &IrHeader::with_labels(vec![a as f32, b as f32]).pack(&[]),
    )?;
    let mut ranges = vec![None::<(u64, u64)>; identities];
    for i in 0..n {
        let (label, payload) = image(i)?;
        let key = i as u64 + 1;
        w.write(key, &IrHeader::image(label, key).pack(&payload))?;
        let range = ranges.get_mut(label).ok_or_else(|| DataError::Config {
            what: "dataset",
            reason: format!("sample {i} has label {label} >= {identities} identities"),
        })?;
        *range = Some(range.map_or((key, key + 1), |(s, e)| (s.min(key), e.max(key + 1))));
    }
    for (k, range) in ranges.into_iter().enumerate() {
        let (start, end) = range.unwrap_or((0, 0));
        w.write(
            a + k as u64,
            &IrHeader::with_labels(vec![start as f32, end as f32]).pack(&[]),
        )?;
    }
    w.finish()
}

/// Names beside a packed `.rec` (`train.names.json`): identity names and each image's relative
/// path, so [`unpack_to_folder`] restores the folder exactly. Not needed to read the `.rec`.
pub fn names_path(rec: &Path) -> PathBuf {
    rec.with_extension("names.json")
}

/// Packs an image folder into `rec` in insightface's layout: record 0 `[a, b]`, images at keys
/// `1..a` (the original encoded bytes, header label = identity, id = key), one identity record
/// per identity at `a..b` with its `[start, end)` image keys. Returns the number of images.
pub fn pack_folder(folder: &ImageFolder, rec: impl AsRef<Path>) -> Result<usize> {
    let rec = rec.as_ref();
    let files = folder.files();
    write_insightface_layout(rec, files.len(), folder.num_identities(), |i| {
        let raw = folder.raw(i)?;
        // Decoded once before it is stored: a corrupt file fails the pack, naming itself,
        // instead of landing in the `.rec` and failing (or being skipped) mid-training.
        decode(&raw, &folder.source().join(&files[i].0), i)?;
        Ok((files[i].1, raw))
    })?;
    let names = serde_json::json!({
        "identities": folder.identities(),
        "files": files.iter().map(|(p, _)| p.to_string_lossy().replace('\\', "/")).collect::<Vec<_>>(),
    });
    let path = names_path(rec);
    let bytes = serde_json::to_vec(&names).expect("serialisable");
    atomic_file::write(&path, &bytes).map_err(io(&path))?;
    Ok(files.len())
}

fn extension_of(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, ..] => "jpg",
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'B', b'M', ..] => "bmp",
        _ => "bin",
    }
}

/// Writes every image of a `.rec` into `out/<identity>/<file>` with its stored bytes: the
/// original names when `train.names.json` is beside it (so folder -> rec -> folder is
/// byte-exact), else `<label>/<key>.<ext>`. Returns the number of images.
pub fn unpack_to_folder(rec: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<usize> {
    let (rec, out) = (rec.as_ref(), out.as_ref());
    let data = RecordDataset::open(rec)?;
    let names: Option<serde_json::Value> = std::fs::read(names_path(rec))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let files = names
        .as_ref()
        .and_then(|n| n["files"].as_array())
        .filter(|f| f.len() == data.len());
    for i in 0..data.len() {
        let bytes = data.raw(i)?;
        let label = data.label(i)?;
        let relative = match files {
            Some(f) => PathBuf::from(f[i].as_str().unwrap_or_default()),
            None => PathBuf::from(format!("{label:06}")).join(format!(
                "{:08}.{}",
                data.key(i)?,
                extension_of(&bytes)
            )),
        };
        let path = out.join(&relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, &bytes).map_err(io(&path))?;
    }
    Ok(data.len())
}

/// Packs any dataset into `rec` in insightface's layout, each image PNG-encoded (lossless),
/// identity by identity (the layout gives each one a key range), and calls `progress` after each
/// image. When the dataset names every identity, the names go beside it (`names.json`), so the
/// `.rec` reads back with them; NIR and depth images, when the samples carry them, go into
/// companion files (`train.nir.rec`, same keys). Used for the synthetic set and continual
/// learning's buffers; `pack_folder` keeps a folder's original bytes instead.
pub fn pack_dataset<D: FaceDataset + ?Sized>(
    data: &D,
    rec: impl AsRef<Path>,
    progress: impl FnMut(usize),
) -> Result<usize> {
    let rec = rec.as_ref();
    let mut order = (0..data.len())
        .map(|i| Ok((data.label(i)?, i)))
        .collect::<Result<Vec<_>>>()?;
    order.sort_unstable();
    write_encoded(
        data,
        &order,
        rec,
        |s, _| crate::encode_png(&s.image),
        progress,
    )?;
    // NIR and depth, when the samples carry them, in companion files with the same keys.
    let first = data.get(order.first().map_or(0, |o| o.1))?;
    for m in Modality::EXTRA
        .into_iter()
        .filter(|&m| first.gray_plane(m, 0).is_ok())
    {
        let encode = |s: &FaceSample, i| crate::encode_png(s.gray_plane(m, i)?);
        write_encoded(data, &order, &companion(rec, m), encode, |_| {})?;
    }
    let names: Option<Vec<String>> = (0..data.num_identities())
        .map(|label| data.identity_name(label))
        .collect();
    if let Some(names) = names {
        crate::folder::write_label_map(&names, &names_path(rec))?;
    }
    Ok(data.len())
}

/// Writes the samples of `data` in `order` (`(label, index)`) into `rec` in insightface's
/// layout, each record `encode`d from its sample, decoded and encoded a chunk at a time on
/// rayon's threads and written in order.
fn write_encoded<D: FaceDataset + ?Sized>(
    data: &D,
    order: &[(usize, usize)],
    rec: &Path,
    encode: impl Fn(&FaceSample, usize) -> Result<Vec<u8>> + Sync,
    mut progress: impl FnMut(usize),
) -> Result<()> {
    let (mut chunk, mut start) = (Vec::<(usize, Vec<u8>)>::new(), 0);
    write_insightface_layout(rec, data.len(), data.num_identities(), |k| {
        if k >= start + chunk.len() {
            use rayon::prelude::*;
            start = k;
            let end = (k + 256).min(order.len());
            chunk = (order[k..end].par_iter())
                .map(|&(label, i)| Ok((label, encode(&data.get(i)?, i)?)))
                .collect::<Result<_>>()?;
        }
        progress(k + 1);
        Ok(std::mem::take(&mut chunk[k - start]))
    })
}
