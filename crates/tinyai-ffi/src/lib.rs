//! tinyai-ffi (in progress)
