# %preun of the nfpm-built RPM ($1: 0 = removal, >= 1 = upgrade).

# %systemd_preun litelb.service: on removal, disable and stop the daemon.
if [ "$1" -eq 0 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper remove-system-units litelb.service || :
    elif [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now litelb.service >/dev/null 2>&1 || :
    fi
fi
