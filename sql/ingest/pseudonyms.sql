-- HMAC-SHA256 of each resident id (RFC 2104), the pads derived from the key in Python
-- (privacy.hmac_pads), so the same ids get the same pseudonyms as privacy.pseudonymise.
-- In DuckDB rather than Python because DuckDB runs it without holding the GIL: the loading
-- thread's hashing no longer stalls the threads validating the next chunks.
-- sha256() gives hex, so the inner digest is unhexed to the 32 bytes HMAC hashes again.
SELECT sha256($outer_pad || unhex(sha256($inner_pad || encode(id)))) AS pseudonym
FROM ids
