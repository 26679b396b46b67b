# The README names these targets; each one installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test unit lint bench bench-inputs venv tesseract promtool stunnel poppler clean

demo: venv tesseract
	$(BIN)/medocr demo

# lint first: ruff and mypy (strict, tests included) are part of the test command
test: venv tesseract promtool stunnel lint
	$(BIN)/python -m pytest

unit: venv
	$(BIN)/python -m pytest tests/unit

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv tesseract
	$(BIN)/python tests/bench/bench_tesseract.py

# PDF rendering against poppler's pdftoppm, lock against process pool; DICOM decode ms/page.
bench-inputs: venv poppler
	$(BIN)/python tests/bench/bench_pdf.py
	$(BIN)/python tests/bench/bench_dicom.py

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[broker,test]'
	touch $@

# Tesseract with the Korean and English models, from Debian/Ubuntu packages.
tesseract:
	@if ! command -v tesseract >/dev/null || ! tesseract --list-langs 2>/dev/null | grep -qx kor; then \
		echo "installing tesseract-ocr (kor+eng) with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng >/dev/null; \
	fi

# promtool and prometheus check and run deploy/prometheus in the tests.
promtool:
	@if ! command -v promtool >/dev/null; then \
		echo "installing prometheus (promtool) with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq prometheus >/dev/null; \
	fi

# stunnel and openssl put TLS in front of the embedded broker in tests/integration/test_tls.py.
stunnel:
	@if ! command -v stunnel4 >/dev/null || ! command -v openssl >/dev/null; then \
		echo "installing stunnel4 and openssl with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq stunnel4 openssl >/dev/null; \
	fi

# pdftoppm, the peer of tests/bench/bench_pdf.py.
poppler:
	@if ! command -v pdftoppm >/dev/null; then \
		echo "installing poppler-utils (pdftoppm) with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq poppler-utils >/dev/null; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
