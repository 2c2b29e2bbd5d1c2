SELECT count(*) FROM duplicate_lines;
