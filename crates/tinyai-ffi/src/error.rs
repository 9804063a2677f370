//! The crate's error type, the thread-local last-error message, and the wrapper
//! that every entry point runs in (no panic crosses the boundary).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use tinyai_store::StoreError;

/// Why a call failed; its message becomes `tinyaiGetLastError()`.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    /// A required pointer argument was NULL.
    #[error("{function}: {argument} is NULL")]
    NullArgument {
        /// The entry point.
        function: &'static str,
        /// The argument's name.
        argument: &'static str,
    },
    /// A layer index outside `0..layerCount` (including negative ones).
    #[error("{function}: layer index {index} out of range (model has {count} layers)")]
    LayerOutOfRange {
        /// The entry point.
        function: &'static str,
        /// The index passed.
        index: i64,
        /// The model's layer count.
        count: u64,
    },
    /// An argument value the library cannot accept.
    #[error("{function}: {message}")]
    InvalidArgument {
        /// The entry point.
        function: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The store refused (I/O, malformed file, configuration, cancellation …).
    #[error("{function}: {source}")]
    Store {
        /// The entry point.
        function: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A panic inside the library (a bug); it was caught at the boundary.
    #[error("{function}: internal error: {message}")]
    Panic {
        /// The entry point.
        function: &'static str,
        /// The panic payload, if it was a string.
        message: String,
    },
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(error: &FfiError) {
    let text = error.to_string().replace('\0', "\\0");
    let message = CString::new(text).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; losing the message
    // then is harmless.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| slot.borrow_mut().take());
}

/// The current thread's last error message, or NULL.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .map_or(std::ptr::null(), |message| message.as_ptr())
        })
        .unwrap_or(std::ptr::null())
}

/// Runs an entry point's body: clears the last error, catches panics, and turns
/// an error (or a panic) into `fallback` plus a last-error message.
pub(crate) fn entry<T>(
    function: &'static str,
    fallback: T,
    body: impl FnOnce() -> Result<T, FfiError>,
) -> T {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => {
            set_last_error(&error);
            fallback
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            // Dropping the payload could itself panic (a panicking Drop); forget it.
            std::mem::forget(payload);
            set_last_error(&FfiError::Panic { function, message });
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn last_error() -> Option<String> {
        let pointer = last_error_ptr();
        if pointer.is_null() {
            return None;
        }
        // SAFETY: non-NULL pointers come from the thread-local `CString`, alive
        // until the next `entry` on this thread.
        let message = unsafe { CStr::from_ptr(pointer) };
        Some(message.to_string_lossy().into_owned())
    }

    #[test]
    fn a_panic_becomes_the_fallback_and_a_message() {
        let value = entry("test_function", -1, || -> Result<i32, FfiError> {
            panic!("boom {}", 42)
        });
        assert_eq!(value, -1);
        let message = last_error().unwrap_or_default();
        assert!(
            message.contains("test_function") && message.contains("boom 42"),
            "{message}"
        );
        // A later success clears it.
        assert_eq!(entry("test_function", -1, || Ok(3)), 3);
        assert_eq!(last_error(), None);
    }

    #[test]
    fn errors_are_per_thread_and_nul_safe() {
        entry("here", (), || {
            Err(FfiError::InvalidArgument {
                function: "here",
                message: "has a \0 inside".to_owned(),
            })
        });
        assert!(
            last_error()
                .unwrap_or_default()
                .contains("has a \\0 inside")
        );
        let other = std::thread::spawn(last_error).join().ok().flatten();
        assert_eq!(other, None);
    }
}
