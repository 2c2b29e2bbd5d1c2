"""Bad-input corpus: broken drops of every kind an agency can produce, and the tests that run them."""
