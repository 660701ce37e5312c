# bash completion for kadpunch and kadpunch-inspect.
# Commands are listed here; each command's options are read from its own
# --help, so they cannot drift from the program. Host names come from
# `kadpunch ssh-config` (the configuration file's named hosts).

_kadpunch_options() {
  "$1" "$2" --help 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u
}

_kadpunch_hosts() {
  kadpunch ssh-config 2>/dev/null | sed -n 's/^Host //p'
}

_kadpunch() {
  local cur prev cmd
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  local commands="demo dht-node keygen announce lookup put get serve connect pair invite daemon relay proxy status ping ssh-config version"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$commands --help --version -h -V" -- "$cur"))
    return
  fi
  cmd="${COMP_WORDS[1]}"
  case "$prev" in
    --key|--config|--allow-file|--state|-o|--output|--program)
      COMPREPLY=($(compgen -f -- "$cur"))
      return ;;
    --control)
      COMPREPLY=($(compgen -f -- "$cur"))
      return ;;
    --log)
      COMPREPLY=($(compgen -W "error warn info debug trace" -- "$cur"))
      return ;;
    --info)
      [ "$cmd" = serve ] && COMPREPLY=($(compgen -W "nobody allowed everyone" -- "$cur"))
      return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_kadpunch_options kadpunch "$cmd")" -- "$cur"))
    return
  fi
  case "$cmd" in
    connect|ping|ssh-config)
      COMPREPLY=($(compgen -W "$(_kadpunch_hosts)" -- "$cur")) ;;
  esac
}

_kadpunch_inspect() {
  local cur cmd
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  local commands="ping find-node lookup nat crawl table records stats version"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "$commands --help --version -h -V" -- "$cur"))
    return
  fi
  cmd="${COMP_WORDS[1]}"
  case "${COMP_WORDS[COMP_CWORD-1]}" in
    --control|--svg) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --log) COMPREPLY=($(compgen -W "error warn info debug trace" -- "$cur")); return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_kadpunch_options kadpunch-inspect "$cmd")" -- "$cur"))
  fi
}

complete -F _kadpunch kadpunch
complete -F _kadpunch_inspect kadpunch-inspect
