# Shell functions the perf/ scripts share; `source "$(dirname "$0")/lib.sh"`.

# disk_irq_cpu DIR: the core that takes the completion interrupts of the disk holding
# DIR (0 if it cannot tell). A completion that lands on another core crosses to the
# reader's first (about 20 us more per read on this virtual machine's single-queue
# disk), so the benchmarks put the servers there.
disk_irq_cpu() {
  local device dev name
  device="$(df "$1" | awk 'NR==2 {print $1}')"
  dev="$(basename "$device")"
  if [ ! -e "/sys/block/$dev" ]; then
    dev="$(lsblk -no pkname "$device" 2>/dev/null | head -n1)"
  fi
  name="$(basename "$(readlink -f "/sys/block/$dev/device" 2>/dev/null)" 2>/dev/null)"
  case "$dev" in nvme*) name="${dev%%n[0-9]*}" ;; esac
  [ -n "$name" ] || { echo 0; return; }
  awk -v name="$name" -v n="$(nproc)" '
    NR > 1 && index($0, name) {
      for (c = 0; c < n; c++) count[c] += $(c + 2)
    }
    END {
      best = 0
      for (c = 0; c < n; c++) if (count[c] > count[best]) best = c
      print best
    }' /proc/interrupts
}
