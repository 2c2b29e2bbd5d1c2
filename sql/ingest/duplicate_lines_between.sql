-- The duplicate lines in one written batch of rows ($1 .. $2 are its first and last line).
SELECT line FROM duplicate_lines WHERE line BETWEEN $1 AND $2 ORDER BY line;
