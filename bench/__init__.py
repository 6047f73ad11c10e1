"""The benchmark (`make bench`, bench/README.md): the raw model, a plain FastAPI server and the
Serve routes side by side, plus backend, batching, GPU, large-photo, profiling and soak runs."""
