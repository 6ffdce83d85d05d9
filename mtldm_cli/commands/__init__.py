"""One module per subcommand; each only parses, reports and writes: the library does the work."""
