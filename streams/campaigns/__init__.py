"""Reliability campaigns (bad input, load) that anyone can rerun: entry-point support only, like
`streams/bench/`; nothing in the pipeline imports them."""
