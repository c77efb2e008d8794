# Thin aliases for dev.py, which needs nothing but Python 3.11+.
.PHONY: test lab bench
test:
	python3 dev.py test
lab:
	python3 dev.py lab
bench:
	.venv/bin/python -m bench
