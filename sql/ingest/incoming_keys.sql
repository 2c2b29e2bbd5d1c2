-- The keys of one file's good rows, kept while the file streams through (spills to disk past the
-- connection's memory limit). k is the key's text: its columns cast to text, joined by U+001F.
CREATE TABLE incoming_keys (k VARCHAR NOT NULL, line BIGINT NOT NULL);
