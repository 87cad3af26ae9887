"""Build support for arm64 Android without an NDK: bionic symbol lists, stub libraries, ELF check."""
