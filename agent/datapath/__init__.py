"""The kernel side: compiling and loading bpf/, attaching programs, writing maps."""
