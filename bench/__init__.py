"""Benchmarks: xipmodel side by side with outside peers (`python -m bench [NAME] [--quick]`)."""
