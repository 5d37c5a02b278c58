//! Minimal access to MATLAB v7.3 files (HDF5 inside): struct arrays, cell references, char
//! arrays stored as `u16`, numeric arrays, and `MATLAB_empty` placeholders.
//!
//! MATLAB stores an `m × n` array as an HDF5 dataset of shape `(n, m)`, so the raw element order
//! is MATLAB's column-major order. A struct array is a group whose fields are datasets of object
//! references (one per element, no `MATLAB_class` attribute); a scalar struct stores its fields
//! directly.
//!
//! The HDF5 layer is `hdf5-pure` (pure Rust, no system library). The file is read into memory
//! once (annotation files are a few MB); every failure on bad input is a [`DatasetError::Mat`]
//! naming the file and the field, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hdf5_pure as h5;

use crate::DatasetError;

/// Most bytes one array of an annotation file may decode to. The real files hold a few thousand
/// numbers per array at most; hdf5-pure allocates a dataset's declared size (shape × element
/// size) before it reads, so a damaged or hostile file declaring a huge shape is refused first.
const MAX_ARRAY_BYTES: u64 = 16 << 20;

/// An open MATLAB v7.3 file.
pub(crate) struct MatFile {
    file: h5::File,
    pub path: PathBuf,
}

/// An HDF5 object: a group or a dataset.
#[derive(Clone)]
enum Obj {
    Group(h5::Group),
    Data(Box<h5::Dataset>),
}

/// A MATLAB value: a struct (group) or an array (dataset). A dataset's `MATLAB_class` and
/// `MATLAB_empty` attributes are read once, when the node is made.
#[derive(Clone)]
pub(crate) struct Node {
    obj: Obj,
    /// `MATLAB_class` of a dataset (groups: read on demand by [`MatFile::class`]).
    class: Option<String>,
    /// `MATLAB_empty` is set and non-zero (datasets only).
    empty: bool,
}

/// `MATLAB_class` from an attribute map (fixed-length ASCII, possibly NUL-padded).
fn class_attr(attrs: &HashMap<String, h5::AttrValue>) -> Option<String> {
    let s = attrs.get("MATLAB_class")?.as_str()?;
    Some(s.trim_end_matches('\0').to_string())
}

impl MatFile {
    pub fn open(path: &Path) -> Result<Self, DatasetError> {
        let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
        let file = h5::File::from_bytes(bytes).map_err(|e| DatasetError::Mat {
            path: path.to_path_buf(),
            field: "<file>".into(),
            message: format!("not a MATLAB v7.3 (HDF5) file: {e}"),
        })?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn err(&self, field: &str, message: impl Into<String>) -> DatasetError {
        DatasetError::Mat { path: self.path.clone(), field: field.to_string(), message: message.into() }
    }

    /// Wrap an object, reading a dataset's MATLAB attributes.
    fn node(&self, obj: Obj, ctx: &str) -> Result<Node, DatasetError> {
        let (class, empty) = match &obj {
            Obj::Group(_) => (None, false),
            Obj::Data(d) => {
                let attrs = d.attrs().map_err(|e| self.err(ctx, format!("unreadable attributes: {e}")))?;
                let empty = attrs.get("MATLAB_empty").and_then(h5::AttrValue::as_u64).is_some_and(|v| v != 0);
                (class_attr(&attrs), empty)
            }
        };
        Ok(Node { obj, class, empty })
    }

    /// A member of a group by name: `Ok(None)` when there is none.
    fn open_child(&self, g: &h5::Group, name: &str, ctx: &str) -> Result<Option<Node>, DatasetError> {
        let obj = match g.dataset(name) {
            Ok(d) => Obj::Data(Box::new(d)),
            Err(h5::Error::NotADataset(_)) => match g.group(name) {
                Ok(g) => Obj::Group(g),
                // e.g. a committed datatype: not a MATLAB value
                Err(h5::Error::NotAGroup(_)) => return Ok(None),
                Err(e) => return Err(self.err(ctx, format!("cannot open `{name}`: {e}"))),
            },
            Err(h5::Error::Format(h5::FormatError::PathNotFound(_))) => return Ok(None),
            Err(e) => return Err(self.err(ctx, format!("cannot open `{name}`: {e}"))),
        };
        self.node(obj, ctx).map(Some)
    }

    /// A top-level variable.
    pub fn var(&self, name: &str) -> Result<Node, DatasetError> {
        self.open_child(&self.file.root(), name, name)?.ok_or_else(|| self.err(name, "variable not found"))
    }

    fn group<'a>(&self, node: &'a Node, ctx: &str) -> Result<&'a h5::Group, DatasetError> {
        match &node.obj {
            Obj::Group(g) => Ok(g),
            Obj::Data(_) => {
                Err(self.err(ctx, format!("expected a struct, found an array of class {:?}", self.class(node))))
            }
        }
    }

    fn data<'a>(&self, node: &'a Node, ctx: &str) -> Result<&'a h5::Dataset, DatasetError> {
        match &node.obj {
            Obj::Data(d) => Ok(d),
            Obj::Group(_) => Err(self.err(ctx, "expected an array, found a struct")),
        }
    }

    /// The dataset of `node`, once its declared size (shape × element size) is known to be at
    /// most [`MAX_ARRAY_BYTES`]: the bound on what reading it allocates.
    fn data_to_read<'a>(&self, node: &'a Node, ctx: &str) -> Result<&'a h5::Dataset, DatasetError> {
        let d = self.data(node, ctx)?;
        let shape = d.shape().map_err(|e| self.err(ctx, format!("unreadable shape: {e}")))?;
        let element = d.element_size().map_err(|e| self.err(ctx, format!("unreadable element type: {e}")))?;
        match shape.iter().try_fold(element, |acc, &n| acc.checked_mul(n)) {
            Some(bytes) if bytes <= MAX_ARRAY_BYTES => Ok(d),
            _ => Err(self.err(
                ctx,
                format!("array of shape {shape:?} ({element}-byte elements) exceeds {MAX_ARRAY_BYTES} bytes"),
            )),
        }
    }

    /// The `MATLAB_class` attribute, when present.
    pub fn class(&self, node: &Node) -> Option<String> {
        match &node.obj {
            Obj::Data(_) => node.class.clone(),
            Obj::Group(g) => g.attrs().ok().as_ref().and_then(class_attr),
        }
    }

    /// Whether the value is MATLAB's empty array `[]`.
    pub fn is_empty(&self, node: &Node) -> bool {
        node.empty
    }

    fn child(&self, node: &Node, name: &str, ctx: &str) -> Result<Node, DatasetError> {
        self.open_child(self.group(node, ctx)?, name, ctx)?.ok_or_else(|| self.err(ctx, format!("no field `{name}`")))
    }

    /// Whether a field dataset holds struct-array element references (refs without a class).
    fn is_element_refs(&self, node: &Node) -> bool {
        match &node.obj {
            Obj::Data(d) => {
                node.class.is_none()
                    && matches!(d.datatype(), Ok(h5::Datatype::Reference { ref_type: h5::ReferenceType::Object, .. }))
            }
            Obj::Group(_) => false,
        }
    }

    /// The objects a dataset of object references points at, in storage order.
    fn deref_all(&self, node: &Node, ctx: &str) -> Result<Vec<Obj>, DatasetError> {
        let objects =
            self.data_to_read(node, ctx)?.dereference().map_err(|e| self.err(ctx, format!("broken reference: {e}")))?;
        objects
            .into_iter()
            .map(|o| match o {
                h5::Object::Group(g) => Ok(Obj::Group(g)),
                h5::Object::Dataset(d) => Ok(Obj::Data(d)),
                _ => Err(self.err(ctx, "reference to an object that is neither a group nor a dataset")),
            })
            .collect()
    }

    /// Field `name` of element `index` (0-based) of a struct or struct array.
    pub fn field(&self, node: &Node, index: usize, name: &str, ctx: &str) -> Result<Node, DatasetError> {
        let f = self.child(node, name, ctx)?;
        let here = format!("{ctx}({}).{name}", index + 1);
        if self.is_element_refs(&f) {
            let mut objs = self.deref_all(&f, &here)?;
            let n = objs.len();
            if index >= n {
                return Err(self.err(&here, format!("index out of range (struct has {n} elements)")));
            }
            self.node(objs.swap_remove(index), &here)
        } else if index == 0 {
            Ok(f)
        } else {
            Err(self.err(&here, "scalar struct has only one element"))
        }
    }

    /// Field `name` of every element of a struct array (the references are resolved once, here;
    /// each element's attributes are read by [`MatFile::at`]).
    pub fn column(&self, node: &Node, name: &str, ctx: &str) -> Result<Column, DatasetError> {
        let f = self.child(node, name, ctx)?;
        let here = format!("{ctx}.{name}");
        if !self.is_element_refs(&f) {
            return Ok(Column { objs: Vec::new(), scalar: Some(f), name: here });
        }
        let objs = self.deref_all(&f, &here)?;
        Ok(Column { objs, scalar: None, name: here })
    }

    /// Element `i` of a [`Column`].
    pub fn at(&self, column: &Column, i: usize) -> Result<Node, DatasetError> {
        match (&column.scalar, column.objs.get(i)) {
            (Some(node), _) if i == 0 => Ok(node.clone()),
            (None, Some(obj)) => self.node(obj.clone(), &format!("{}({})", column.name, i + 1)),
            _ => Err(self.err(&column.name, format!("index {} out of range ({} elements)", i + 1, column.len()))),
        }
    }

    /// Field `name` of every element of a struct array.
    pub fn field_all(&self, node: &Node, name: &str, ctx: &str) -> Result<Vec<Node>, DatasetError> {
        let column = self.column(node, name, ctx)?;
        (0..column.len()).map(|i| self.at(&column, i)).collect()
    }

    /// The numbers of an array in MATLAB column-major order; `[]` → empty; char arrays are parsed
    /// as whitespace-separated decimal numbers (the ILSVRC truth stores boxes as text).
    pub fn numbers(&self, node: &Node, ctx: &str) -> Result<Vec<f64>, DatasetError> {
        if self.is_empty(node) {
            return Ok(Vec::new());
        }
        if self.class(node).as_deref() == Some("char") {
            let s = self.string(node, ctx)?;
            return s
                .split_whitespace()
                .map(|t| t.parse::<f64>().map_err(|_| self.err(ctx, format!("text {s:?} is not a number"))))
                .collect();
        }
        let d = self.data_to_read(node, ctx)?;
        let v = d.read_f64().map_err(|e| self.err(ctx, format!("not a numeric array: {e}")))?;
        if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
            return Err(self.err(ctx, format!("non-finite value {bad}")));
        }
        Ok(v)
    }

    /// Exactly one number.
    pub fn scalar(&self, node: &Node, ctx: &str) -> Result<f64, DatasetError> {
        match self.numbers(node, ctx)?.as_slice() {
            [v] => Ok(*v),
            other => Err(self.err(ctx, format!("expected one number, found {}", other.len()))),
        }
    }

    /// A MATLAB char array (UTF-16 code units).
    pub fn string(&self, node: &Node, ctx: &str) -> Result<String, DatasetError> {
        if self.is_empty(node) {
            return Ok(String::new());
        }
        if self.class(node).as_deref() != Some("char") {
            return Err(self.err(ctx, format!("expected text, found class {:?}", self.class(node))));
        }
        let units =
            self.data_to_read(node, ctx)?.read_u16().map_err(|e| self.err(ctx, format!("not a char array: {e}")))?;
        String::from_utf16(&units).map_err(|_| self.err(ctx, "invalid UTF-16 text"))
    }
}

/// The elements of one field of a struct array (see [`MatFile::column`]).
pub(crate) struct Column {
    objs: Vec<Obj>,
    scalar: Option<Node>,
    name: String,
}

impl Column {
    /// Number of elements.
    pub fn len(&self) -> usize {
        if self.scalar.is_some() {
            1
        } else {
            self.objs.len()
        }
    }
}

/// Read `validObj` of the authors' CUB `sampling.mat`: 1-based object indices.
pub fn read_cub_sampling(path: &Path) -> Result<Vec<usize>, DatasetError> {
    let mat = MatFile::open(path)?;
    let node = mat.var("validObj")?;
    mat.numbers(&node, "validObj")?
        .into_iter()
        .map(|v| {
            if v >= 1.0 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(mat.err("validObj", format!("{v} is not a 1-based index")))
            }
        })
        .collect()
}

/// Writers of MATLAB-v7.3-like files, for test fixtures (hdf5-pure's `FileBuilder`).
#[cfg(test)]
pub(crate) mod write {
    use super::*;
    use hdf5_pure::{AttrValue, DatasetBuilder, FileBuilder, FinishedGroup, GroupBuilder};

    /// A v7.3-like file under construction; objects referenced from struct arrays go to `#refs#`.
    /// Nothing is written before [`MatWriter::finish`].
    pub struct MatWriter {
        path: PathBuf,
        root: Vec<(String, Item)>,
        refs: Vec<(String, Item)>,
    }

    /// A value to write.
    pub enum Val {
        Num(Vec<f64>),
        Text(String),
        Empty,
        Struct(Vec<(String, Val)>),
        /// A struct array: field names and, per element, one value per field.
        StructArray(Vec<String>, Vec<Vec<Val>>),
    }

    /// An HDF5 object to emit.
    enum Item {
        Double(Vec<f64>),
        Char(Vec<u16>),
        Empty,
        /// Object references to these paths, no `MATLAB_class` (a struct-array field).
        Refs(Vec<String>),
        Struct(Vec<(String, Item)>),
    }

    /// The root group or a group being built.
    trait Parent {
        fn dataset(&mut self, name: &str) -> &mut DatasetBuilder;
        fn group(&mut self, name: &str) -> GroupBuilder;
        fn add(&mut self, group: FinishedGroup);
    }

    impl Parent for FileBuilder {
        fn dataset(&mut self, name: &str) -> &mut DatasetBuilder {
            self.create_dataset(name)
        }
        fn group(&mut self, name: &str) -> GroupBuilder {
            self.create_group(name)
        }
        fn add(&mut self, group: FinishedGroup) {
            self.add_group(group)
        }
    }

    impl Parent for GroupBuilder {
        fn dataset(&mut self, name: &str) -> &mut DatasetBuilder {
            self.create_dataset(name)
        }
        fn group(&mut self, name: &str) -> GroupBuilder {
            self.create_group(name)
        }
        fn add(&mut self, group: FinishedGroup) {
            self.add_group(group)
        }
    }

    fn class(name: &str) -> AttrValue {
        AttrValue::AsciiString(name.into())
    }

    /// MATLAB's shape for a vector of `n` elements: `n × 1`, stored as HDF5 `(1, n)`.
    fn column_shape(n: usize) -> [u64; 2] {
        [1, n as u64]
    }

    fn emit(parent: &mut dyn Parent, name: &str, item: &Item) {
        match item {
            Item::Double(v) => {
                parent
                    .dataset(name)
                    .with_f64_data(v)
                    .with_shape(&column_shape(v.len()))
                    .set_attr("MATLAB_class", class("double"));
            }
            Item::Char(units) => {
                parent
                    .dataset(name)
                    .with_u16_data(units)
                    .with_shape(&column_shape(units.len()))
                    .set_attr("MATLAB_class", class("char"))
                    .set_attr("MATLAB_int_decode", AttrValue::I32(2));
            }
            Item::Empty => {
                parent
                    .dataset(name)
                    .with_u64_data(&[0, 0])
                    .set_attr("MATLAB_class", class("double"))
                    .set_attr("MATLAB_empty", AttrValue::U8(1));
            }
            Item::Refs(paths) => {
                let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                parent.dataset(name).with_path_references(&paths).with_shape(&column_shape(paths.len()));
            }
            Item::Struct(fields) => {
                let mut g = parent.group(name);
                g.set_attr("MATLAB_class", class("struct"));
                for (k, v) in fields {
                    emit(&mut g, k, v);
                }
                parent.add(g.finish());
            }
        }
    }

    impl MatWriter {
        pub fn create(path: &Path) -> Self {
            Self { path: path.to_path_buf(), root: Vec::new(), refs: Vec::new() }
        }

        fn item(&mut self, val: &Val) -> Item {
            match val {
                Val::Num(v) => Item::Double(v.clone()),
                Val::Text(s) => Item::Char(s.encode_utf16().collect()),
                Val::Empty => Item::Empty,
                Val::Struct(fields) => Item::Struct(fields.iter().map(|(k, v)| (k.clone(), self.item(v))).collect()),
                Val::StructArray(names, elements) => {
                    let mut fields = Vec::new();
                    for (f, fname) in names.iter().enumerate() {
                        let mut paths = Vec::new();
                        for el in elements {
                            // nested struct arrays push their own elements first
                            let item = self.item(&el[f]);
                            let key = format!("r{}", self.refs.len());
                            paths.push(format!("/#refs#/{key}"));
                            self.refs.push((key, item));
                        }
                        fields.push((fname.clone(), Item::Refs(paths)));
                    }
                    Item::Struct(fields)
                }
            }
        }

        pub fn put_root(&mut self, name: &str, val: &Val) {
            let item = self.item(val);
            self.root.push((name.to_string(), item));
        }

        /// Write the file: a 512-byte MATLAB header (userblock), the variables and `#refs#`.
        pub fn finish(self) {
            let mut b = FileBuilder::new();
            b.with_userblock(512);
            b.with_userblock_content(
                b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: expgraph tests HDF5 schema 1.00 .",
            );
            for (name, item) in &self.root {
                emit(&mut b, name, item);
            }
            if !self.refs.is_empty() {
                let mut refs = b.create_group("#refs#");
                for (name, item) in &self.refs {
                    emit(&mut refs, name, item);
                }
                b.add_group(refs.finish());
            }
            b.write(&self.path).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::write::{MatWriter, Val};
    use super::*;

    fn sampling(dir: &Path, val: Val) -> PathBuf {
        let path = dir.join("sampling.mat");
        let mut w = MatWriter::create(&path);
        w.put_root("validObj", &val);
        w.finish();
        path
    }

    /// `(path: field, message)` of the expected `DatasetError::Mat`.
    fn fails<T>(r: Result<T, DatasetError>) -> (String, String) {
        match r {
            Err(DatasetError::Mat { path, field, message }) => (format!("{}: {field}", path.display()), message),
            Err(other) => panic!("expected a Mat error, got {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn reads_numbers_and_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = sampling(dir.path(), Val::Num(vec![2.0, 6.0, 8.0]));
        assert_eq!(read_cub_sampling(&p).unwrap(), [2, 6, 8]);
        let p = sampling(dir.path(), Val::Num(vec![2.0, 0.0]));
        let (at, m) = fails(read_cub_sampling(&p));
        assert!(at.contains("sampling.mat: validObj") && m.contains("not a 1-based index"), "{at}: {m}");
        let p = sampling(dir.path(), Val::Num(vec![1.0, f64::NAN]));
        assert!(fails(read_cub_sampling(&p)).1.contains("non-finite"));
        // text is parsed as numbers (the ILSVRC boxes); other text is an error naming it
        let p = sampling(dir.path(), Val::Text("3 4".into()));
        assert_eq!(read_cub_sampling(&p).unwrap(), [3, 4]);
        let p = sampling(dir.path(), Val::Text("three".into()));
        assert!(fails(read_cub_sampling(&p)).1.contains("\"three\" is not a number"));
        let p = sampling(dir.path(), Val::Empty);
        assert_eq!(read_cub_sampling(&p).unwrap(), Vec::<usize>::new());
        let p = sampling(dir.path(), Val::Struct(vec![("a".into(), Val::Num(vec![1.0]))]));
        assert!(fails(read_cub_sampling(&p)).1.contains("found a struct"));
    }

    #[test]
    fn missing_variable_non_hdf5_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.mat");
        let mut w = MatWriter::create(&path);
        w.put_root("somethingElse", &Val::Num(vec![1.0]));
        w.finish();
        let (at, m) = fails(read_cub_sampling(&path));
        assert!(at.ends_with("other.mat: validObj") && m == "variable not found", "{at}: {m}");
        // a MATLAB v5 file (no HDF5 inside) and plain text
        let v5 = dir.path().join("v5.mat");
        let mut bytes = b"MATLAB 5.0 MAT-file, Platform: GLNXA64".to_vec();
        bytes.resize(1024, 0);
        std::fs::write(&v5, bytes).unwrap();
        let (at, m) = fails(read_cub_sampling(&v5));
        assert!(at.ends_with("v5.mat: <file>") && m.starts_with("not a MATLAB v7.3 (HDF5) file"), "{at}: {m}");
        std::fs::write(&v5, "").unwrap();
        assert!(fails(read_cub_sampling(&v5)).1.starts_with("not a MATLAB v7.3"));
        let e = read_cub_sampling(&dir.path().join("none.mat")).unwrap_err();
        assert!(matches!(&e, DatasetError::Io { path, .. } if path.ends_with("none.mat")), "{e:?}");
    }

    fn struct_array(dir: &Path) -> PathBuf {
        let path = dir.join("truth.mat");
        let mut w = MatWriter::create(&path);
        let elements = (0..3)
            .map(|i| {
                vec![
                    Val::Text(format!("img{i}")),
                    Val::StructArray(vec!["v".into()], vec![vec![Val::Num(vec![i as f64])], vec![Val::Empty]]),
                ]
            })
            .collect();
        w.put_root("truth", &Val::StructArray(vec!["name".into(), "sub".into()], elements));
        w.put_root("one", &Val::Struct(vec![("x".into(), Val::Num(vec![7.0]))]));
        w.finish();
        path
    }

    #[test]
    fn struct_arrays_columns_and_scalar_structs() {
        let dir = tempfile::tempdir().unwrap();
        let mat = MatFile::open(&struct_array(dir.path())).unwrap();
        let truth = mat.var("truth").unwrap();
        assert_eq!(mat.class(&truth).as_deref(), Some("struct"));
        let names = mat.column(&truth, "name", "truth").unwrap();
        assert_eq!(names.len(), 3);
        assert_eq!(mat.string(&mat.at(&names, 2).unwrap(), "n").unwrap(), "img2");
        let (at, m) = fails(mat.at(&names, 3));
        assert!(at.ends_with("truth.name") && m.contains("index 4 out of range (3 elements)"), "{at}: {m}");
        let sub = mat.field(&truth, 1, "sub", "truth").unwrap();
        let v = mat.field_all(&sub, "v", "truth(2).sub").unwrap();
        assert_eq!(mat.numbers(&v[0], "v").unwrap(), [1.0]);
        assert!(mat.is_empty(&v[1]) && mat.numbers(&v[1], "v").unwrap().is_empty());
        let (at, m) = fails(mat.field(&truth, 5, "name", "truth"));
        assert!(at.ends_with("truth(6).name") && m.contains("struct has 3 elements"), "{at}: {m}");
        let (at, m) = fails(mat.field(&truth, 0, "nope", "truth"));
        assert!(at.ends_with("truth") && m == "no field `nope`", "{at}: {m}");
        // a scalar struct stores its fields directly
        let one = mat.var("one").unwrap();
        assert_eq!(mat.scalar(&mat.field(&one, 0, "x", "one").unwrap(), "one.x").unwrap(), 7.0);
        assert!(fails(mat.field(&one, 1, "x", "one")).1.contains("only one element"));
        let x = mat.field(&one, 0, "x", "one").unwrap();
        assert!(fails(mat.string(&x, "one.x")).1.contains("expected text, found class Some(\"double\")"));
        assert!(fails(mat.field(&x, 0, "y", "one.x")).1.contains("expected a struct"));
    }

    /// Read everything the way voc.rs does; `Err` is fine, a panic is not.
    fn read_all(path: &Path) -> Result<usize, DatasetError> {
        let mat = MatFile::open(path)?;
        let truth = mat.var("truth")?;
        let mut n = 0;
        for (i, name) in mat.field_all(&truth, "name", "truth")?.iter().enumerate() {
            n += mat.string(name, "name")?.len();
            let sub = mat.field(&truth, i, "sub", "truth")?;
            for v in mat.field_all(&sub, "v", "sub")? {
                n += mat.numbers(&v, "v")?.len();
            }
        }
        Ok(n + mat.scalar(&mat.field(&mat.var("one")?, 0, "x", "one")?, "x")? as usize)
    }

    #[test]
    fn truncated_and_corrupted_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let good = struct_array(dir.path());
        assert_eq!(read_all(&good).unwrap(), 3 * 4 + 3 + 7);
        let bytes = std::fs::read(&good).unwrap();
        let bad = dir.path().join("bad.mat");
        for len in [0, 100, 511, 512, 520, 600, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&bad, &bytes[..len]).unwrap();
            let e = read_all(&bad).expect_err("a truncated file must not read");
            assert!(e.to_string().contains("bad.mat"), "{e}");
        }
        // flipped bytes (deterministic xorshift): any result but a panic
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..400 {
            let mut b = bytes.clone();
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let i = 512 + (s as usize) % (b.len() - 512);
                b[i] ^= (s >> 32) as u8 | 1;
            }
            std::fs::write(&bad, &b).unwrap();
            let _ = read_all(&bad);
        }
    }
}
