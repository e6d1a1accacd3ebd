"""config → plan (ordered actions) → executor → runner → kernel."""
