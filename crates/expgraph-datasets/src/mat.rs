//! Minimal access to MATLAB v7.3 files (HDF5 inside): struct arrays, cell references, char
//! arrays stored as `u16`, numeric arrays, and `MATLAB_empty` placeholders.
//!
//! MATLAB stores an `m × n` array as an HDF5 dataset of shape `(n, m)`, so the raw element order
//! is MATLAB's column-major order. A struct array is a group whose fields are datasets of object
//! references (one per element, no `MATLAB_class` attribute); a scalar struct stores its fields
//! directly.

use std::path::{Path, PathBuf};

use hdf5_metno as hdf5;
use hdf5::types::FixedAscii;
use hdf5::{ObjectReference1, ReferencedObject};

use crate::DatasetError;

/// An open MATLAB v7.3 file.
pub(crate) struct MatFile {
    file: hdf5::File,
    pub path: PathBuf,
}

/// A MATLAB value: a struct (group) or an array (dataset).
#[derive(Clone)]
pub(crate) enum Node {
    Group(hdf5::Group),
    Data(hdf5::Dataset),
}

impl MatFile {
    pub fn open(path: &Path) -> Result<Self, DatasetError> {
        if !path.exists() {
            return Err(DatasetError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let file = hdf5::File::open(path).map_err(|e| DatasetError::Mat {
            path: path.to_path_buf(),
            field: "<file>".into(),
            message: format!("not a MATLAB v7.3 (HDF5) file: {e}"),
        })?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn err(&self, field: &str, message: impl Into<String>) -> DatasetError {
        DatasetError::Mat { path: self.path.clone(), field: field.to_string(), message: message.into() }
    }

    /// A top-level variable.
    pub fn var(&self, name: &str) -> Result<Node, DatasetError> {
        open_child(&self.file, name).ok_or_else(|| self.err(name, "variable not found"))
    }

    fn deref(&self, r: &ObjectReference1, ctx: &str) -> Result<Node, DatasetError> {
        match self.file.dereference(r) {
            Ok(ReferencedObject::Group(g)) => Ok(Node::Group(g)),
            Ok(ReferencedObject::Dataset(d)) => Ok(Node::Data(d)),
            Ok(ReferencedObject::Datatype(_)) => Err(self.err(ctx, "reference to a datatype")),
            Err(e) => Err(self.err(ctx, format!("broken reference: {e}"))),
        }
    }

    fn group<'a>(&self, node: &'a Node, ctx: &str) -> Result<&'a hdf5::Group, DatasetError> {
        match node {
            Node::Group(g) => Ok(g),
            Node::Data(_) => Err(self.err(ctx, format!("expected a struct, found an array of class {:?}", self.class(node)))),
        }
    }

    fn data<'a>(&self, node: &'a Node, ctx: &str) -> Result<&'a hdf5::Dataset, DatasetError> {
        match node {
            Node::Data(d) => Ok(d),
            Node::Group(_) => Err(self.err(ctx, "expected an array, found a struct")),
        }
    }

    /// The `MATLAB_class` attribute, when present.
    pub fn class(&self, node: &Node) -> Option<String> {
        let attr = node_attr(node, "MATLAB_class")?;
        attr.read_scalar::<FixedAscii<64>>().ok().map(|s| s.as_str().to_string())
    }

    /// Whether the value is MATLAB's empty array `[]`.
    pub fn is_empty(&self, node: &Node) -> bool {
        matches!(node, Node::Data(_))
            && node_attr(node, "MATLAB_empty").and_then(|a| a.read_scalar::<u8>().ok()).is_some_and(|v| v != 0)
    }

    fn child(&self, node: &Node, name: &str, ctx: &str) -> Result<Node, DatasetError> {
        open_child(self.group(node, ctx)?, name).ok_or_else(|| self.err(ctx, format!("no field `{name}`")))
    }

    /// Whether a field dataset holds struct-array element references (refs without a class).
    fn is_element_refs(&self, node: &Node) -> bool {
        match node {
            Node::Data(d) => d.dtype().is_ok_and(|t| t.is::<ObjectReference1>()) && self.class(node).is_none(),
            Node::Group(_) => false,
        }
    }

    /// Field `name` of element `index` (0-based) of a struct or struct array.
    pub fn field(&self, node: &Node, index: usize, name: &str, ctx: &str) -> Result<Node, DatasetError> {
        let f = self.child(node, name, ctx)?;
        let here = format!("{ctx}({}).{name}", index + 1);
        if self.is_element_refs(&f) {
            let refs = self.data(&f, &here)?.read_raw::<ObjectReference1>().map_err(|e| self.err(&here, e.to_string()))?;
            let r = refs.get(index).ok_or_else(|| self.err(&here, format!("index out of range (struct has {} elements)", refs.len())))?;
            self.deref(r, &here)
        } else if index == 0 {
            Ok(f)
        } else {
            Err(self.err(&here, "scalar struct has only one element"))
        }
    }

    /// Field `name` of every element of a struct array, dereferenced on demand
    /// (the reference table is read once; dereferencing is the slow part of HDF5).
    pub fn column(&self, node: &Node, name: &str, ctx: &str) -> Result<Column, DatasetError> {
        let f = self.child(node, name, ctx)?;
        let here = format!("{ctx}.{name}");
        if !self.is_element_refs(&f) {
            return Ok(Column { refs: Vec::new(), scalar: Some(f), name: here });
        }
        let refs = self.data(&f, &here)?.read_raw::<ObjectReference1>().map_err(|e| self.err(&here, e.to_string()))?;
        Ok(Column { refs, scalar: None, name: here })
    }

    /// Element `i` of a [`Column`].
    pub fn at(&self, column: &Column, i: usize) -> Result<Node, DatasetError> {
        match (&column.scalar, column.refs.get(i)) {
            (Some(node), _) if i == 0 => Ok(node.clone()),
            (None, Some(r)) => self.deref(r, &format!("{}({})", column.name, i + 1)),
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
        // fast path: a plain double array (checking attributes is slow in HDF5)
        let is_double = matches!(node, Node::Data(d) if d.dtype().is_ok_and(|t| t.is::<f64>()));
        if !is_double && self.is_empty(node) {
            return Ok(Vec::new());
        }
        if !is_double && self.class(node).as_deref() == Some("char") {
            let s = self.string(node, ctx)?;
            return s
                .split_whitespace()
                .map(|t| t.parse::<f64>().map_err(|_| self.err(ctx, format!("text {s:?} is not a number"))))
                .collect();
        }
        let d = self.data(node, ctx)?;
        let v = d.read_raw::<f64>().map_err(|e| self.err(ctx, format!("not a numeric array: {e}")))?;
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
        let units = self.data(node, ctx)?.read_raw::<u16>().map_err(|e| self.err(ctx, e.to_string()))?;
        String::from_utf16(&units).map_err(|_| self.err(ctx, "invalid UTF-16 text"))
    }
}

/// The references of one field of a struct array (see [`MatFile::column`]).
pub(crate) struct Column {
    refs: Vec<ObjectReference1>,
    scalar: Option<Node>,
    name: String,
}

impl Column {
    /// Number of elements.
    pub fn len(&self) -> usize {
        if self.scalar.is_some() {
            1
        } else {
            self.refs.len()
        }
    }
}

/// An attribute, looked up by name first (a failed open is slow in the HDF5 library).
fn node_attr(node: &Node, name: &str) -> Option<hdf5::Attribute> {
    let loc: &hdf5::Location = match node {
        Node::Group(g) => g,
        Node::Data(d) => d,
    };
    if !loc.attr_names().ok()?.iter().any(|n| n == name) {
        return None;
    }
    loc.attr(name).ok()
}

/// A member of a group, by its link type, without failing opens.
fn open_child(g: &hdf5::Group, name: &str) -> Option<Node> {
    if !g.link_exists(name) {
        return None;
    }
    match g.loc_type_by_name(name).ok()? {
        hdf5::LocationType::Group => g.group(name).ok().map(Node::Group),
        hdf5::LocationType::Dataset => g.dataset(name).ok().map(Node::Data),
        _ => None,
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

/// Writers of MATLAB-v7.3-like files, for test fixtures.
#[cfg(test)]
pub(crate) mod write {
    use super::*;

    /// A v7.3-like file under construction; objects referenced from struct arrays go to `#refs#`.
    pub struct MatWriter {
        pub file: hdf5::File,
        refs: hdf5::Group,
        next: usize,
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

    fn set_class(loc: &hdf5::Location, class: &str) {
        let v = FixedAscii::<16>::from_ascii(class).unwrap();
        loc.new_attr::<FixedAscii<16>>().create("MATLAB_class").unwrap().write_scalar(&v).unwrap();
    }

    impl MatWriter {
        pub fn create(path: &Path) -> Self {
            let file = hdf5::File::create(path).unwrap();
            let refs = file.create_group("#refs#").unwrap();
            Self { file, refs, next: 0 }
        }

        pub fn put(&mut self, parent: &hdf5::Group, name: &str, val: &Val) {
            match val {
                Val::Num(v) => {
                    let d = parent.new_dataset_builder().with_data(v.as_slice()).create(name).unwrap();
                    set_class(&d, "double");
                }
                Val::Text(s) => {
                    let units: Vec<u16> = s.encode_utf16().collect();
                    let d = parent.new_dataset_builder().with_data(units.as_slice()).create(name).unwrap();
                    set_class(&d, "char");
                    d.new_attr::<i32>().create("MATLAB_int_decode").unwrap().write_scalar(&2).unwrap();
                }
                Val::Empty => {
                    let d = parent.new_dataset_builder().with_data(&[0u64, 0][..]).create(name).unwrap();
                    set_class(&d, "double");
                    d.new_attr::<u8>().create("MATLAB_empty").unwrap().write_scalar(&1).unwrap();
                }
                Val::Struct(fields) => {
                    let g = parent.create_group(name).unwrap();
                    set_class(&g, "struct");
                    for (k, v) in fields {
                        self.put(&g, k, v);
                    }
                }
                Val::StructArray(names, elements) => {
                    let g = parent.create_group(name).unwrap();
                    set_class(&g, "struct");
                    for (f, fname) in names.iter().enumerate() {
                        let mut refs = Vec::new();
                        for el in elements {
                            let key = format!("r{}", self.next);
                            self.next += 1;
                            let target = self.refs.clone();
                            self.put(&target, &key, &el[f]);
                            refs.push(self.file.reference::<ObjectReference1>(&format!("/#refs#/{key}")).unwrap());
                        }
                        g.new_dataset_builder().with_data(refs.as_slice()).create(fname.as_str()).unwrap();
                    }
                }
            }
        }

        pub fn put_root(&mut self, name: &str, val: &Val) {
            let root = self.file.group("/").unwrap();
            self.put(&root, name, val);
        }
    }
}
