//! The exception hierarchy, and the mapping from the store's and the CLI's
//! error enums onto it.
//!
//! ```text
//! TinyAIError(Exception)
//! ├── FormatError              not a valid .tmai (or convert input) file
//! │   └── ChecksumError        a layer, header or table checksum does not match
//! ├── FileChangedError         the file changed (or was truncated) since it was opened
//! ├── ConfigError(ValueError)  a bad argument to open(), a bad priority
//! ├── LayerIndexError(IndexError)   a layer index out of range
//! ├── TensorNotFoundError(KeyError) no tensor of that name in the layer
//! ├── ClosedError(ValueError)  the model was closed, or the layer released
//! └── StoreIOError(OSError)    the OS refused (errno set): missing file, permission …
//! ```
//!
//! Classes with two bases cannot be declared with PyO3's `create_exception!`,
//! so they are made with `type(name, bases, namespace)` when the module is
//! imported, and kept in a [`PyOnceLock`].

use pyo3::exceptions::{PyException, PyIndexError, PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use tinyai_cli::CliError;
use tinyai_format::FormatError;
use tinyai_store::StoreError;

/// The exception classes, created once per interpreter.
pub(crate) struct Exceptions {
    pub(crate) base: Py<PyType>,
    pub(crate) format: Py<PyType>,
    pub(crate) checksum: Py<PyType>,
    pub(crate) file_changed: Py<PyType>,
    pub(crate) config: Py<PyType>,
    pub(crate) index: Py<PyType>,
    pub(crate) tensor: Py<PyType>,
    pub(crate) closed: Py<PyType>,
    pub(crate) io: Py<PyType>,
}

static EXCEPTIONS: PyOnceLock<Exceptions> = PyOnceLock::new();

fn make_class(
    py: Python<'_>,
    name: &str,
    bases: &[&Bound<'_, PyType>],
    doc: &str,
) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "tinyai")?;
    namespace.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, bases, namespace))?
        .cast_into::<PyType>()?;
    Ok(class.unbind())
}

fn create(py: Python<'_>) -> PyResult<Exceptions> {
    let exception = py.get_type::<PyException>();
    let base = make_class(
        py,
        "TinyAIError",
        &[&exception],
        "Base class of every error the store raises; str() is the store's message.",
    )?;
    let base_type = base.bind(py).clone();
    let format = make_class(
        py,
        "FormatError",
        &[&base_type],
        "The file is not a valid .tmai file (or not a convertible input); the message says what and where.",
    )?;
    let format_type = format.bind(py).clone();
    Ok(Exceptions {
        checksum: make_class(
            py,
            "ChecksumError",
            &[&format_type],
            "A CRC-32C checksum (of a layer, the header or the tables) does not match the bytes.",
        )?,
        file_changed: make_class(
            py,
            "FileChangedError",
            &[&base_type],
            "The file changed size or identity since it was opened, or a read came back short; reopen the model.",
        )?,
        config: make_class(
            py,
            "ConfigError",
            &[&base_type, &py.get_type::<PyValueError>()],
            "An argument of open() is out of range or unknown, or a priority is not a finite number.",
        )?,
        index: make_class(
            py,
            "LayerIndexError",
            &[&base_type, &py.get_type::<PyIndexError>()],
            "A layer index is out of range.",
        )?,
        tensor: make_class(
            py,
            "TensorNotFoundError",
            &[&base_type, &py.get_type::<PyKeyError>()],
            "The layer has no tensor of that name.",
        )?,
        closed: make_class(
            py,
            "ClosedError",
            &[&base_type, &py.get_type::<PyValueError>()],
            "The model was closed, or the Layer object released; arrays and memoryviews taken before stay valid.",
        )?,
        io: make_class(
            py,
            "StoreIOError",
            &[&base_type, &py.get_type::<PyOSError>()],
            "The operating system refused an operation on the file; errno is set when the OS gave one.",
        )?,
        base,
        format,
    })
}

/// The exception classes (created on first use).
pub(crate) fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
    EXCEPTIONS.get_or_try_init(py, || create(py))
}

/// Registers the classes in `module`.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let classes = exceptions(py)?;
    for class in [
        &classes.base,
        &classes.format,
        &classes.checksum,
        &classes.file_changed,
        &classes.config,
        &classes.index,
        &classes.tensor,
        &classes.closed,
        &classes.io,
    ] {
        let class = class.bind(py);
        module.add(class.name()?, class)?;
    }
    Ok(())
}

/// Which class an error belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Base,
    Format,
    Checksum,
    FileChanged,
    Config,
    Index,
    Tensor,
    Closed,
    /// An OS error, with its errno when there is one.
    Io(Option<i32>),
}

/// A Python exception of `kind` carrying `message`.
pub(crate) fn error(py: Python<'_>, kind: Kind, message: String) -> PyErr {
    let classes = match exceptions(py) {
        Ok(classes) => classes,
        Err(error) => return error,
    };
    let (class, arguments) = match kind {
        Kind::Base => (&classes.base, PyTuple::new(py, [message])),
        Kind::Format => (&classes.format, PyTuple::new(py, [message])),
        Kind::Checksum => (&classes.checksum, PyTuple::new(py, [message])),
        Kind::FileChanged => (&classes.file_changed, PyTuple::new(py, [message])),
        Kind::Config => (&classes.config, PyTuple::new(py, [message])),
        Kind::Index => (&classes.index, PyTuple::new(py, [message])),
        Kind::Tensor => (&classes.tensor, PyTuple::new(py, [message])),
        Kind::Closed => (&classes.closed, PyTuple::new(py, [message])),
        // OSError(errno, strerror) sets .errno and .strerror.
        Kind::Io(Some(errno)) => (&classes.io, (errno, message).into_pyobject(py)),
        Kind::Io(None) => (&classes.io, PyTuple::new(py, [message])),
    };
    let instance = arguments.and_then(|arguments| class.bind(py).call1(arguments));
    match instance {
        Ok(instance) => PyErr::from_value(instance),
        Err(error) => error,
    }
}

fn format_kind(source: &FormatError) -> Kind {
    match source {
        FormatError::ChecksumMismatch { .. }
        | FormatError::HeaderChecksumMismatch { .. }
        | FormatError::TablesChecksumMismatch { .. } => Kind::Checksum,
        _ => Kind::Format,
    }
}

/// The class of a store error.
pub(crate) fn store_kind(error: &StoreError) -> Kind {
    match error {
        StoreError::Io { source, .. } => Kind::Io(source.raw_os_error()),
        StoreError::NotAFile { .. } => Kind::Io(None),
        StoreError::Format { source, .. } => format_kind(source),
        StoreError::InvalidConfig(_) | StoreError::InvalidPriority { .. } => Kind::Config,
        StoreError::LayerOutOfRange { .. } => Kind::Index,
        StoreError::FileChanged { .. } | StoreError::ShortRead { .. } => Kind::FileChanged,
        StoreError::NoSuchTensor { .. } => Kind::Tensor,
        _ => Kind::Base,
    }
}

/// A store error as a Python exception, with the store's message.
pub(crate) fn store_error(py: Python<'_>, error: StoreError) -> PyErr {
    self::error(py, store_kind(&error), error.to_string())
}

/// A `tmai` library error as a Python exception, with the tool's message.
pub(crate) fn cli_error(py: Python<'_>, error: CliError) -> PyErr {
    let kind = match &error {
        CliError::Usage(_) => Kind::Config,
        CliError::Io { source, .. } => Kind::Io(source.raw_os_error()),
        CliError::Format { source, .. } => format_kind(source),
        CliError::BadInput { .. } => Kind::Format,
        CliError::Corrupt { .. } => Kind::Checksum,
    };
    self::error(py, kind, error.to_string())
}

/// Extension trait: `result.py(py)?` turns a store error into its exception.
pub(crate) trait StoreResultExt<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> StoreResultExt<T> for Result<T, StoreError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|error| store_error(py, error))
    }
}
