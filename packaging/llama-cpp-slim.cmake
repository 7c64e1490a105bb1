# Loaded into llama.cpp's own project() while pip builds llama-cpp-python (see the Makefile's
# CMAKE_ARGS): edgevoice uses only libllama and ggml through llama-cpp-python's ctypes bindings,
# so llama.cpp's `common` helper library (argument parsing, chat helpers for its own programs;
# llama-cpp-python forces it on and never ships it) is not built. With -DLLAVA_BUILD=OFF (no
# multimodal libmtmd) this halves the compile. A normal variable shadows the forced cache entry
# in this directory only, and option() leaves an existing variable alone (CMP0077).
set(LLAMA_BUILD_COMMON OFF)
