"""Reports: the demo pipeline, tables and plots."""
