//! tinyai-cache (in progress)
