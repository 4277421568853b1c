"""Everything that crosses the language line as bytes: pure functions, no I/O."""
