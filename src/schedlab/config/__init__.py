"""Settings, study files, presets, typed parameters and the engine choice (never imports torch)."""
