"""Reports: tables, statistics, figures and one HTML page, read from the store alone."""
