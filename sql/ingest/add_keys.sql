-- One chunk's keys (chunk_keys: the Arrow table registered for it) join the file's.
INSERT INTO incoming_keys SELECT k, line FROM chunk_keys;
