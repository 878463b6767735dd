# Sourced by the scripts in scripts/ceremony: finds the custos binary and checks who is present.
# Environment:
#   CUSTOS_BIN            the custos binary (default: the repository's release build, else debug)
#   CEREMONY_OPERATOR     the operator's name (required)
#   CEREMONY_WITNESSES    witnesses' names, separated by commas (at least one)
#   CEREMONY_TRANSCRIPT   the transcript file (JSON lines; created by the first step)
#   CUSTOS_CONFIG         the configuration (default: .custos/config.json above the current directory)
# PINs are never arguments: they come from files named in the configuration or options.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)

ceremony_log() { printf 'ceremony: %s\n' "$*" >&2; }
ceremony_fail() { ceremony_log "$*"; exit 1; }

if [[ -z "${CUSTOS_BIN:-}" ]]; then
    for candidate in "$REPO/.build/release/custos" "$REPO/.build/debug/custos"; do
        if [[ -x "$candidate" ]]; then CUSTOS_BIN=$candidate; break; fi
    done
fi
[[ -n "${CUSTOS_BIN:-}" && -x "$CUSTOS_BIN" ]] || ceremony_fail "no custos binary: build it (swift build -c release) or set CUSTOS_BIN"

[[ -n "${CEREMONY_OPERATOR:-}" ]] || ceremony_fail "set CEREMONY_OPERATOR to the operator's name"
[[ -n "${CEREMONY_WITNESSES:-}" ]] || ceremony_fail "set CEREMONY_WITNESSES to the witnesses' names, separated by commas"
[[ -n "${CEREMONY_TRANSCRIPT:-}" ]] || ceremony_fail "set CEREMONY_TRANSCRIPT to the transcript file"

# --operator NAME --witness A --witness B … --transcript FILE
PARTICIPANTS=(--operator "$CEREMONY_OPERATOR" --transcript "$CEREMONY_TRANSCRIPT")
IFS=',' read -r -a _witnesses <<<"$CEREMONY_WITNESSES"
for _witness in "${_witnesses[@]}"; do
    _witness=$(printf '%s' "$_witness" | sed 's/^ *//; s/ *$//')
    [[ -n "$_witness" ]] && PARTICIPANTS+=(--witness "$_witness")
done

# Output files are created 0600 by custos; keep anything else this shell makes private too.
umask 077
