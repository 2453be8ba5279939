#!/usr/bin/env bash
# make gpu-wheels, second part: dcmtk's storescu and storescp with the libraries they load
# (all but the C and C++ runtimes, which a newer host has), packed as .whl/dcmtk-bundle.tar.xz
# for an offline GPU host that has no dcmtk (the latency rows of make gpu-check need both).
# On the host, benchmarks/gpu_check.sh unpacks it and puts wrapper scripts on PATH; the
# libraries are seen by these two programs only (LD_LIBRARY_PATH in the wrapper, not for
# Python). Needs dcmtk installed here (make tools).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl/dcmtk-bundle.tar.xz
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/dcmtk/libexec" "$staging/dcmtk/lib" "$staging/dcmtk/bin" "$staging/dcmtk/share"
runtime='^(linux-vdso|ld-linux|libc\.|libm\.|libstdc\+\+|libgcc_s|libpthread|libdl\.|librt\.|libresolv\.|libutil\.|libanl\.)'
for program in storescu storescp; do
    path=$(command -v "$program") || { echo "dcmtk-bundle: $program not found (make tools)" >&2; exit 1; }
    cp "$path" "$staging/dcmtk/libexec/"
    ldd "$path" | awk '$3 ~ /^\// {print $1, $3}' | while read -r name file; do
        [[ $name =~ $runtime ]] || cp -L "$file" "$staging/dcmtk/lib/$name"
    done
    cat > "$staging/dcmtk/bin/$program" <<WRAPPER
#!/bin/sh
here=\$(dirname "\$(readlink -f "\$0")")/..
DCMDICTPATH="\$here/share/dicom.dic" LD_LIBRARY_PATH="\$here/lib" exec "\$here/libexec/$program" "\$@"
WRAPPER
    chmod +x "$staging/dcmtk/bin/$program"
done
dictionary=$(dpkg -L libdcmtk17 2>/dev/null | grep '/dicom\.dic$' | head -n 1 || true)
[[ -n $dictionary ]] || dictionary=$(find /usr/share -name dicom.dic -path '*dcmtk*' | head -n 1)
cp "$dictionary" "$staging/dcmtk/share/dicom.dic"
mkdir -p .whl
tar -C "$staging" -cJf "$out" dcmtk
echo "dcmtk-bundle: $out ($(du -h "$out" | cut -f1))"
