//! [`CliError`], the one error type of the tool.

use std::path::Path;

use tinyai_format::FormatError;

/// Everything that can make a `tmai` command fail. Every variant renders as one
/// line that says what was wrong and where (file, layer, tensor, byte offset).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// An operating-system error while reading or writing a file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.tmai` file failed validation, or the writer refused something.
    #[error("{path}: {source}")]
    Format {
        /// The file concerned.
        path: String,
        /// What the format crate found.
        #[source]
        source: FormatError,
    },
    /// A source file (safetensors, GGUF, index JSON, legacy v1) is malformed or unsupported.
    #[error("{path}: {message}")]
    BadInput {
        /// The file concerned.
        path: String,
        /// What is wrong, and where in the file.
        message: String,
    },
    /// `tmai verify` found corrupt layers.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file concerned.
        path: String,
        /// Which layers failed and how.
        message: String,
    },
}

impl CliError {
    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let context = context.into();
        move |source| CliError::Io { context, source }
    }

    /// A format error about `path`.
    pub fn format(path: &Path) -> impl FnOnce(FormatError) -> CliError + '_ {
        move |source| CliError::Format {
            path: path.display().to_string(),
            source,
        }
    }

    /// A malformed-input error about `path`.
    pub fn bad_input(path: &Path, message: impl Into<String>) -> CliError {
        CliError::BadInput {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
