//! An owned tensor and the one safetensors encoder of the workspace ([`serialize_safetensors`]:
//! same content, same bytes), used by this crate's shards, the graph files of `expgraph-graph`
//! and the statistics and raw-map files of `expgraph-features`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use safetensors::Dtype;
use serde::Serialize;

/// A tensor to serialize, owning its little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    /// An f64 tensor.
    pub fn f64(shape: Vec<usize>, values: impl IntoIterator<Item = f64>) -> Self {
        Self { dtype: Dtype::F64, shape, bytes: values.into_iter().flat_map(f64::to_le_bytes).collect() }
    }
    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, values: impl IntoIterator<Item = f32>) -> Self {
        Self { dtype: Dtype::F32, shape, bytes: values.into_iter().flat_map(f32::to_le_bytes).collect() }
    }
    /// An i32 tensor.
    pub fn i32(shape: Vec<usize>, values: impl IntoIterator<Item = i32>) -> Self {
        Self { dtype: Dtype::I32, shape, bytes: values.into_iter().flat_map(i32::to_le_bytes).collect() }
    }
    /// A u8 tensor.
    pub fn u8(shape: Vec<usize>, values: impl IntoIterator<Item = u8>) -> Self {
        Self { dtype: Dtype::U8, shape, bytes: values.into_iter().collect() }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A set of tensors that cannot be encoded (a length that does not match the shape, a name used
/// twice, or a name reserved by the format).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode safetensors: {0}")]
pub struct EncodeError(String);

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, EncodeError> {
    serde_json::to_string(value).map_err(|e| EncodeError(e.to_string()))
}

/// Encode named tensors and string metadata in the safetensors format, **byte-deterministically**:
/// the same content gives the same bytes in every run (`safetensors::serialize` takes its metadata
/// as a `HashMap` and writes it in that map's random order, so its bytes vary between runs).
///
/// Layout (the one `safetensors::serialize` writes; read back by `safetensors::SafeTensors`): an
/// 8-byte little-endian header length; a JSON header, `"__metadata__"` first (left out when there
/// is no metadata) with its keys sorted, then one `{"dtype","shape","data_offsets"}` entry per
/// tensor, padded with spaces to a multiple of 8; then the tensors' bytes back to back. Tensors are
/// stored in safetensors' own order (descending dtype alignment, then name), so each starts at an
/// offset aligned to its element size. A key given twice in `metadata` keeps its last value.
pub fn serialize_safetensors<'a, N, K, V>(
    tensors: impl IntoIterator<Item = (N, &'a OwnedTensor)>,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<u8>, EncodeError>
where
    N: AsRef<str>,
    K: Into<String>,
    V: Into<String>,
{
    let tensors: Vec<(String, &OwnedTensor)> = tensors.into_iter().map(|(n, t)| (n.as_ref().to_owned(), t)).collect();
    let entries: Vec<Entry<'_>> =
        tensors.iter().map(|(n, t)| Entry { name: n, dtype: t.dtype, shape: &t.shape, len: t.bytes.len() }).collect();
    let (head, order) = header(entries, metadata)?;
    let mut out = head;
    for i in order {
        out.extend_from_slice(&tensors[i].1.bytes);
    }
    Ok(out)
}

/// Writes a tensor's bytes ([`StreamedTensor::fill`]).
pub type FillBytes<'a> = Box<dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a>;

/// A tensor whose bytes are produced while it is written ([`write_safetensors`]), so that a
/// large file never exists in memory: `fill` writes exactly the tensor's little-endian bytes.
pub struct StreamedTensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Writes the bytes.
    pub fill: FillBytes<'a>,
}

/// [`serialize_safetensors`] written to `out` as it is produced, the same bytes: the header,
/// then each tensor's `fill` in the format's order. A tensor whose `fill` writes another number
/// of bytes than its shape needs is an error (`InvalidData`), as are the encoding errors.
pub fn write_safetensors<K, V>(
    out: &mut dyn Write,
    tensors: Vec<(String, StreamedTensor<'_>)>,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> io::Result<()>
where
    K: Into<String>,
    V: Into<String>,
{
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut entries = Vec::with_capacity(tensors.len());
    for (name, t) in &tensors {
        let bits = t.shape.iter().try_fold(t.dtype.bitsize(), |acc, &d| acc.checked_mul(d));
        let len = bits.filter(|b| b % 8 == 0).map(|b| b / 8).ok_or_else(|| {
            invalid(format!("tensor `{name}`: shape {:?} of {:?} is not a whole number of bytes", t.shape, t.dtype))
        })?;
        entries.push(Entry { name, dtype: t.dtype, shape: &t.shape, len });
    }
    let lens: Vec<usize> = entries.iter().map(|e| e.len).collect();
    let (head, order) = header(entries, metadata).map_err(|e| invalid(e.to_string()))?;
    out.write_all(&head)?;
    let mut tensors: Vec<Option<(String, StreamedTensor<'_>)>> = tensors.into_iter().map(Some).collect();
    for i in order {
        let Some((name, mut t)) = tensors[i].take() else { continue };
        let mut counted = Counted { inner: &mut *out, bytes: 0 };
        (t.fill)(&mut counted)?;
        if counted.bytes != lens[i] {
            return Err(invalid(format!(
                "tensor `{name}`: {} bytes written, its shape needs {}",
                counted.bytes, lens[i]
            )));
        }
    }
    Ok(())
}

/// A writer that counts what passes through.
struct Counted<'w> {
    inner: &'w mut dyn Write,
    bytes: usize,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One tensor of a header: its bytes' length checked against its shape by the caller.
struct Entry<'a> {
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    len: usize,
}

/// The length prefix and the padded JSON header of `entries` (see [`serialize_safetensors`]),
/// and the order (indices into `entries`) their bytes follow in.
fn header<K, V>(
    entries: Vec<Entry<'_>>,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> Result<(Vec<u8>, Vec<usize>), EncodeError>
where
    K: Into<String>,
    V: Into<String>,
{
    let metadata: BTreeMap<String, String> = metadata.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&l, &r| {
        let (l, r) = (&entries[l], &entries[r]);
        r.dtype.cmp(&l.dtype).then_with(|| l.name.cmp(r.name))
    });
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&json(&metadata)?);
    }
    let mut names = BTreeSet::new();
    let mut offset = 0usize;
    for &i in &order {
        let t = &entries[i];
        let name = t.name;
        if name == "__metadata__" || !names.insert(name) {
            return Err(EncodeError(format!("tensor name `{name}` is reserved or used twice")));
        }
        let bits = t.shape.iter().try_fold(t.dtype.bitsize(), |acc, &d| acc.checked_mul(d));
        if bits.is_none_or(|b| b % 8 != 0 || b / 8 != t.len) {
            return Err(EncodeError(format!(
                "tensor `{name}`: {} bytes are not a {:?} tensor of shape {:?}",
                t.len, t.dtype, t.shape
            )));
        }
        let end = offset + t.len;
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&json(name)?);
        header.push_str(":{\"dtype\":");
        header.push_str(&json(&t.dtype)?);
        header.push_str(",\"shape\":");
        header.push_str(&json(&t.shape)?);
        header.push_str(&format!(",\"data_offsets\":[{offset},{end}]}}"));
        offset = end;
    }
    header.push('}');
    let padded = header.len().next_multiple_of(8);
    let mut out = Vec::with_capacity(8 + padded + offset);
    out.extend_from_slice(&(padded as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.resize(8 + padded, b' ');
    Ok((out, order))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::SafeTensors;

    use super::*;

    fn sample() -> Vec<(String, OwnedTensor)> {
        vec![
            ("zeta".into(), OwnedTensor::u8(vec![3], [1, 2, 3])),
            ("alpha".into(), OwnedTensor::f32(vec![2, 2], [1.0, -2.0, 3.5, 0.25])),
            ("mid \"quoted\" é".into(), OwnedTensor::f64(vec![1], [std::f64::consts::PI])),
            ("idx".into(), OwnedTensor::i32(vec![2], [-7, 9])),
            ("empty".into(), OwnedTensor::f32(vec![0, 4], [])),
        ]
    }

    fn many_keys() -> HashMap<String, String> {
        (0..64).map(|i| (format!("key{i:02}-{}", 97 * i % 64), format!("value \"{i}\"\n"))).collect()
    }

    #[test]
    fn same_content_gives_the_same_bytes_whatever_the_input_order() {
        let tensors = sample();
        let meta = many_keys();
        let a = serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), meta.clone()).unwrap();
        // the keys in reverse order, the tensors in reverse order
        let mut meta2: Vec<(String, String)> = meta.clone().into_iter().collect();
        meta2.sort();
        meta2.reverse();
        let b = serialize_safetensors(tensors.iter().rev().map(|(n, t)| (n, t)), meta2).unwrap();
        assert_eq!(a, b);
        for _ in 0..20 {
            let m: HashMap<String, String> = meta.clone().into_iter().collect();
            assert_eq!(serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), m).unwrap(), a);
        }
        // safetensors' own encoder does not keep its metadata order across maps (the bug fixed here)
        let theirs: std::collections::HashSet<Vec<u8>> = (0..20)
            .map(|_| {
                let m: HashMap<String, String> = meta.clone().into_iter().collect();
                safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(m)).unwrap()
            })
            .collect();
        assert!(theirs.len() > 1, "safetensors::serialize was expected to vary with the map's order");
    }

    #[test]
    fn streamed_writing_gives_the_encoder_bytes_and_checks_lengths() {
        let tensors = sample();
        let meta = many_keys();
        let want = serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), meta.clone()).unwrap();
        let streamed = |short: bool| {
            tensors
                .iter()
                .map(|(n, t)| {
                    let bytes = if short && n == "alpha" { &t.bytes[1..] } else { &t.bytes[..] };
                    let fill = Box::new(move |w: &mut dyn Write| {
                        // in pieces, as a caller producing rows would
                        for piece in bytes.chunks(3) {
                            w.write_all(piece)?;
                        }
                        Ok(())
                    });
                    (n.clone(), StreamedTensor { dtype: t.dtype, shape: t.shape.clone(), fill })
                })
                .collect::<Vec<_>>()
        };
        let mut got = Vec::new();
        write_safetensors(&mut got, streamed(false), meta.clone()).unwrap();
        assert_eq!(got, want);
        let err = write_safetensors(&mut Vec::new(), streamed(true), meta).unwrap_err();
        assert!(err.to_string().contains("alpha") && err.to_string().contains("15 bytes"), "{err}");
    }

    #[test]
    fn round_trip_through_the_safetensors_reader() {
        let tensors = sample();
        let meta = many_keys();
        let bytes = serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), meta.clone()).unwrap();
        assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0, "header padded to 8 bytes");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), tensors.len());
        for (name, t) in &tensors {
            let v = st.tensor(name).unwrap();
            assert_eq!((v.dtype(), v.shape(), v.data()), (t.dtype, &t.shape[..], &t.bytes[..]), "{name}");
        }
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap(), &meta);
        // header keys sorted, `__metadata__` first
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(text.starts_with("{\"__metadata__\":{\"key00-0\":"), "{text}");
        let keys: Vec<&String> = meta.keys().collect::<BTreeSet<_>>().into_iter().collect();
        let pos: Vec<usize> = keys.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn same_bytes_as_safetensors_when_its_order_is_unambiguous() {
        let tensors = sample();
        for meta in [HashMap::from([("format".to_string(), "x".to_string())]), HashMap::new()] {
            let ours = serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), meta.clone()).unwrap();
            let meta = (!meta.is_empty()).then_some(meta);
            let theirs = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), meta).unwrap();
            assert_eq!(ours, theirs);
        }
        let none: [(&str, &OwnedTensor); 0] = [];
        let ours = serialize_safetensors(none, [("k", "v")]).unwrap();
        assert!(SafeTensors::deserialize(&ours).unwrap().is_empty());
    }

    #[test]
    fn shards_of_the_same_maps_are_byte_identical() {
        use crate::shard::{decode_map, encode, read_header, ShardMeta};
        use crate::{LayerInfo, StorageDtype, TapGeometry, View};
        let info = LayerInfo {
            name: "conv".into(),
            channels: 3,
            height: 2,
            width: 2,
            geometry: TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 },
        };
        let maps: Vec<f32> = (0..2 * 12).map(|i| (i * 7 % 11) as f32 * 0.5).collect();
        let meta = ShardMeta { key: "k123", layer: "conv", view: View::Flipped, index: 4 };
        for dtype in [StorageDtype::F16, StorageDtype::U8] {
            let a = encode(&meta, &info, dtype, &maps).unwrap();
            for _ in 0..10 {
                assert_eq!(encode(&meta, &info, dtype, &maps).unwrap(), a, "{dtype:?}");
            }
            let header = read_header(std::path::Path::new("x.safetensors"), &a).unwrap();
            assert_eq!((header.key.as_str(), header.shape), ("k123", [2, 3, 2, 2]));
            let mut out = vec![0.0; 4];
            decode_map(&header, &a, 5, &mut out);
            for (o, m) in out.iter().zip(&maps[20..24]) {
                assert!((o - m).abs() <= 0.03, "{dtype:?}: {o} vs {m}");
            }
        }
    }

    #[test]
    fn bad_tensors_are_rejected() {
        let short = OwnedTensor { dtype: Dtype::F32, shape: vec![2], bytes: vec![0; 7] };
        assert!(serialize_safetensors([("a", &short)], [("k", "v")]).unwrap_err().to_string().contains("`a`"));
        let ok = OwnedTensor::u8(vec![1], [0]);
        assert!(serialize_safetensors([("a", &ok), ("a", &ok)], [("k", "v")]).is_err());
        assert!(serialize_safetensors([("__metadata__", &ok)], [("k", "v")]).is_err());
    }
}
