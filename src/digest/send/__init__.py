"""Who gets the digest, and getting it to them exactly once."""
