# The README names these targets; each one installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test unit lint bench bench-inputs venv tesseract promtool stunnel poppler clean \
	podman lock wheelhouse base-image image lock-gpu wheelhouse-gpu image-gpu

demo: venv tesseract
	$(BIN)/medocr demo

# lint first: ruff and mypy (strict, tests included) are part of the test command;
# podman: tests/deploy/test_deploy_image.py builds and runs the image (make image)
test: venv tesseract promtool stunnel podman lint
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

# ---- container images: README "Deploy", deploy/README.md "Images, built offline" ----
# The engine: docker when its daemon answers, else rootful podman with the runc runtime
# (installed with it; crun, podman's usual one, fails on setrlimit in some sandboxes).
# Worked out once, on first use.
ENGINE ?= $(eval ENGINE := $$(shell timeout 10 docker info >/dev/null 2>&1 && echo docker || echo podman))$(ENGINE)
ENGINE_CMD = $(if $(filter podman,$(ENGINE)),podman --runtime runc,$(ENGINE))
# podman keeps HEALTHCHECK only in the docker image format; apt-get inside the build
# reaches the mirror through the host's network.
BUILD_FLAGS = --network host $(if $(filter podman,$(ENGINE)),--format docker)
IMAGE      ?= medocr:cpu
GPU_IMAGE  ?= medocr:gpu
BASE_IMAGE ?= debian:bookworm-slim
DEBIAN_MIRROR          ?= http://deb.debian.org/debian
DEBIAN_SECURITY_MIRROR ?= http://deb.debian.org/debian-security
LOCK       := deploy/requirements.lock
GPU_LOCK   := deploy/requirements-gpu.lock
WHEELHOUSE := build/wheelhouse
# The GPU image's interpreter: Ubuntu 24.04's CPython 3.12 (glibc 2.39) on x86_64.
GPU_TARGET := --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
	--only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
	$(foreach glibc,39 38 37 36 35 34 33 32 31 30 29 28 27 26 25 24 23 17 5,\
		--platform manylinux_2_$(glibc)_x86_64)

# podman and runc (when no docker daemon answers) and debootstrap (for base-image).
podman:
	@if [ "$(ENGINE)" = podman ] && ! { command -v podman && command -v runc; } >/dev/null; then \
		echo "installing podman and runc with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq podman runc >/dev/null; \
	fi
	@if ! command -v debootstrap >/dev/null; then \
		echo "installing debootstrap with apt-get"; \
		$(APT) update -qq && $(APT) install -y -qq debootstrap >/dev/null; \
	fi

# The image's Python dependencies, pinned: medocr's runtime dependencies (no extras: no
# test tools, no vLLM) resolved in a clean venv and frozen. Run after changing them in
# pyproject.toml; tests/deploy/test_deploy_lock.py says when it is due.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --upgrade pip
	build/lock-venv/bin/pip install --quiet .
	{ echo "# medocr's runtime dependencies for the images, pinned. Made by 'make lock'"; \
	  echo "# (pip freeze of a clean venv after 'pip install .'): do not edit by hand."; \
	  build/lock-venv/bin/python --version | sed 's/^/# resolved on /'; \
	  build/lock-venv/bin/pip freeze --exclude medocr; } > $(LOCK)
	rm -rf build/lock-venv build/lib build/bdist.*

# build/wheelhouse: the wheels the lock names (fetched again only when the lock changes;
# a copy of the lock says which) and the medocr wheel (made each time); the GPU lock's
# wheels join them (wheelhouse-gpu). Each image installs its own lock from it and pip
# takes the wheel for that image's Python. Carry this folder and the repository into
# an air-gapped network to build there; delete it to drop wheels no lock names now.
$(WHEELHOUSE)/requirements.lock: $(LOCK) | venv
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) -r $(LOCK)
	cp $(LOCK) $@

wheelhouse: $(WHEELHOUSE)/requirements.lock
	@# setuptools builds in build/lib: a module deleted from the tree must not ship
	rm -rf build/lib build/bdist.* $(WHEELHOUSE)/medocr-*.whl
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) .
	rm -rf build/lib build/bdist.*

# The GPU image's dependencies, pinned: medocr[vllm] resolved by pip for GPU_TARGET
# (metadata only: nothing is installed). `make wheelhouse-gpu` makes it when missing.
lock-gpu:
	rm -f $(GPU_LOCK)
	$(MAKE) --no-print-directory $(GPU_LOCK)

$(GPU_LOCK): | wheelhouse
	rm -rf build/lock-gpu build/lock-gpu.json
	$(BIN)/pip install --quiet --dry-run --ignore-installed $(GPU_TARGET) \
		--target build/lock-gpu --report build/lock-gpu.json \
		"$$(ls $(WHEELHOUSE)/medocr-*.whl)[vllm]"
	{ echo "# medocr[vllm]'s dependencies for deploy/Dockerfile.gpu, pinned. Made by"; \
	  echo "# 'make lock-gpu' (pip's resolution for CPython 3.12, manylinux x86_64)."; \
	  $(BIN)/python -c 'import json, sys; ms = [i["metadata"] for i in json.load(open(sys.argv[1]))["install"]]; print("\n".join(sorted("%s==%s" % (m["name"], m["version"]) for m in ms if m["name"] != "medocr")))' build/lock-gpu.json; \
	} > $@.tmp
	mv $@.tmp $@
	rm -rf build/lock-gpu build/lock-gpu.json

$(WHEELHOUSE)/requirements-gpu.lock: $(GPU_LOCK) | venv
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip download --quiet --no-deps $(GPU_TARGET) --dest $(WHEELHOUSE) -r $(GPU_LOCK)
	cp $(GPU_LOCK) $@

wheelhouse-gpu: wheelhouse $(WHEELHOUSE)/requirements-gpu.lock

# A local debian:bookworm-slim from Debian's packages when the engine has none (no
# registry is asked); `docker pull debian:bookworm-slim` first to use the registry's.
base-image: podman
	@if $(ENGINE_CMD) image inspect $(BASE_IMAGE) >/dev/null 2>&1; then \
		echo "base image $(BASE_IMAGE): present"; \
	elif [ "$(BASE_IMAGE)" = debian:bookworm-slim ]; then \
		echo "making $(BASE_IMAGE) with debootstrap (about a minute)"; \
		$(SUDO) deploy/debian-base.sh "$(ENGINE_CMD)" $(BASE_IMAGE) \
			$(DEBIAN_MIRROR) $(DEBIAN_SECURITY_MIRROR); \
	else \
		echo "base image $(BASE_IMAGE): not present; the build pulls it"; \
	fi

# medocr:cpu (the worker; `medocr gateway` is the same image with another command).
# The image it replaces is removed (unless a container uses it); the build cache stays.
image: base-image wheelhouse
	@old=$$($(ENGINE_CMD) image inspect --format '{{.Id}}' $(IMAGE) 2>/dev/null); \
	set -x; $(ENGINE_CMD) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		-f deploy/Dockerfile.cpu -t $(IMAGE) . || exit 1; { set +x; } 2>/dev/null; \
	new=$$($(ENGINE_CMD) image inspect --format '{{.Id}}' $(IMAGE)); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then \
		$(ENGINE_CMD) rmi "$$old" >/dev/null 2>&1 || true; \
	fi
	@$(ENGINE_CMD) image inspect --format '{{.Size}}' $(IMAGE) \
		| awk '{ printf "$(IMAGE): %.0f MB\n", $$1 / 1e6 }'

# medocr:gpu: its build stage runs on ubuntu:24.04, its runtime on the CUDA base; both
# come from a registry (or `docker load`), as apt-get's packages come from Ubuntu's.
image-gpu: podman wheelhouse-gpu
	$(ENGINE_CMD) build $(BUILD_FLAGS) -f deploy/Dockerfile.gpu -t $(GPU_IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
