"""The test corpus: build.sh makes it with real tools, conftest.py caches it (fixture `corpus`)."""
