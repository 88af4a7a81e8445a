# %postun of the nfpm-built RPM ($1: 0 = removal, >= 1 = upgrade).

if [ "$1" -ge 1 ]; then
    # %systemd_postun_with_restart litelb.service: a running daemon is restarted on
    # the new code (by systemd's RPM file trigger at the end of the transaction).
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper mark-restart-system-units litelb.service || :
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
        systemctl try-restart litelb.service >/dev/null 2>&1 || :
    fi
else
    # The bytecode %post compiled is not in the package's file list.
    rm -rf /usr/lib/litelb
fi
