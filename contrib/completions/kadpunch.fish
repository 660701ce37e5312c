# fish completion for kadpunch and kadpunch-inspect. Commands are listed
# here; each command's options are read from its own --help; host names
# from `kadpunch ssh-config`.

function __kadpunch_options
    set -l cmd (commandline -opc)
    if test (count $cmd) -ge 2
        $cmd[1] $cmd[2] --help 2>/dev/null | string match -ar -- '--[a-z][a-z-]*' | sort -u
    end
end

function __kadpunch_hosts
    kadpunch ssh-config 2>/dev/null | string replace -rf '^Host ' ''
end

set -l kp_commands demo dht-node keygen announce lookup put get serve connect pair invite daemon relay proxy status ping ssh-config version
complete -c kadpunch -f
complete -c kadpunch -n "not __fish_seen_subcommand_from $kp_commands" -a "$kp_commands"
complete -c kadpunch -n "__fish_seen_subcommand_from $kp_commands" -a "(__kadpunch_options)"
complete -c kadpunch -n "__fish_seen_subcommand_from connect ping ssh-config" -a "(__kadpunch_hosts)"
complete -c kadpunch -s h -l help -d 'show help'
complete -c kadpunch -s V -l version -d 'print the version'

set -l ki_commands ping find-node lookup nat crawl table records stats version
complete -c kadpunch-inspect -f
complete -c kadpunch-inspect -n "not __fish_seen_subcommand_from $ki_commands" -a "$ki_commands"
complete -c kadpunch-inspect -n "__fish_seen_subcommand_from $ki_commands" -a "(__kadpunch_options)"
complete -c kadpunch-inspect -s h -l help -d 'show help'
complete -c kadpunch-inspect -s V -l version -d 'print the version'
