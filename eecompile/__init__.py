"""eecompile."""
