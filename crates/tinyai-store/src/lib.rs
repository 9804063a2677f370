//! tinyai-store (in progress)
