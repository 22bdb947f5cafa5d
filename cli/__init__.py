"""meshctl: the Weft command-line tool."""
