# %post of the nfpm-built RPM ($1: number of litelb packages after this one is in).

# Bytecode for the interpreter this machine has (3.9 on RHEL 9, 3.1x on Fedora):
# the unit's ProtectSystem=strict keeps the daemon from writing it itself.
/usr/bin/python3 -m compileall -q /usr/lib/litelb/litelb >/dev/null 2>&1 || :

# %systemd_post litelb.service: presets on first install only (the default preset
# leaves it disabled; the operator enables it after editing /etc/litelb.toml).
if [ "$1" -eq 1 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper install-system-units litelb.service || :
    elif [ -d /run/systemd/system ]; then
        systemctl --no-reload preset litelb.service >/dev/null 2>&1 || :
    fi
fi
