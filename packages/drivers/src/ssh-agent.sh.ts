// The remote half of the ssh store: a POSIX sh script that the driver feeds to `sh -s` on the
// host, then talks to with one request per line. Paths never become shell code: every key and
// the store root arrive as data (a `read` line or a `head -c` block) and are only ever expanded
// inside double quotes, with globbing off. Requests (client -> host), each answered in order:
//
//   in SESSION [clean | lite TAR FIND STAT] + root line -> ok tar=gnu|bsd|none find=gnu|posix stat=gnu|bsd|none root=dir|none|notdir
//   hs N LEN + N key lines (LEN bytes) -> ok BITS         (1 present, 0 absent, one per key)
//   st + key line                     -> ok SIZE MTIME | none
//   rb N LEN + N key lines            -> tar, a tar stream of the present keys, end RC MSG | none
//   rr START LEN + key line           -> tar, a one-entry tar stream of the byte range, end RC MSG | none
//   wb N LLEN TLEN BATCH + list + tar -> ok RESULTS, then msg MSG   (list lines: c<key> create, r<key> replace)
//   dm N LEN + N key lines            -> ok | err MSG
//   ls + directory key line           -> SIZE MTIME RELPATH lines (RELPATH may start ./), then end RC
//   ch + prefix line                  -> n NAME lines, then end
//   fl                                -> ok
//   sr SIZE BLOCKING                  -> ok SENTINEL, then the session is a read stream (kk_streamreads)
//   q                                 -> (exits)
//
// Writes land in the session's staging directory `<root>/.tmp-<session>/` (skipped by every
// lister, like the file driver's `.tmp-*` files) as `<batch>/<index>` and are hard-linked
// (create: EEXIST = already there, decided by the inode afterwards) or renamed (replace) into place.
// Keys go to commands as `./key` or under the absolute root, so none can read as an option.
// In this template literal `${'$'}{` stands for the shell's own `${`.
export const AGENT_SCRIPT = String.raw`
set -f
export LC_ALL=C
umask 022
exec 3>&1
kk_nl='
'
IFS=$kk_nl
kk_root=
kk_sdir=
kk_lf=
kk_staged=0
kk_e2=
kk_dd=

kk_mkparent() {
  kk_d=$1
  kk_d=${'$'}{kk_d%/*}
  [ -d "$kk_d" ] || mkdir -p "$kk_d" 2>/dev/null || [ -d "$kk_d" ]
}

# A list of $1 keys in $2 bytes: short ones line by line with the read builtin (no process),
# long ones in one head -c.
kk_getlist() {
  if [ "$1" -le 32 ]; then
    kk_l=
    kk_n=0
    while [ "$kk_n" -lt "$1" ] && IFS= read -r kk_k; do kk_l="$kk_l$kk_k$kk_nl"; kk_n=$((kk_n + 1)); done
    IFS=$kk_nl
  else
    kk_l=$(head -c "$2")
  fi
}

kk_clean() {
  if [ -n "$kk_sdir" ] && [ -d "$kk_root/$kk_sdir" ]; then rm -rf "$kk_root/$kk_sdir" 2>/dev/null; fi
  kk_staged=0
}

kk_oneline() {
  kk_m=
  for kk_l in $1; do
    case $kk_l in
      *'File exists'*|*'Already exists'*|*'Exiting with failure status'*) ;;
      *) kk_m="$kk_m $kk_l" ;;
    esac
  done
  printf '%s' "$kk_m"
}

kk_init() {
  IFS= read -r kk_root
  IFS=$kk_nl
  kk_sdir=.tmp-$1
  case $kk_root in /*) ;; *) printf 'err root is not absolute\n'; return ;; esac
  if [ "$2" = lite ]; then
    kk_tar=$3 kk_find=$4 kk_statf=$5
  else
    kk_v=$(tar --version 2>/dev/null)
    case $kk_v in
      *GNU*) kk_tar=gnu ;;
      *bsdtar*|*libarchive*) kk_tar=bsd ;;
      *) kk_tar=none ;;
    esac
    if find / -maxdepth 0 -printf '' >/dev/null 2>&1; then kk_find=gnu; else kk_find=posix; fi
    if stat -c %s / >/dev/null 2>&1; then kk_statf=gnu; elif stat -f %z / >/dev/null 2>&1; then kk_statf=bsd; else kk_statf=none; fi
  fi
  if [ -d "$kk_root" ]; then
    kk_r=dir
    if [ "$2" = clean ]; then
      find "$kk_root" -mindepth 1 -maxdepth 1 -type d -name '.tmp-*' -mmin +1440 -exec rm -rf {} + >/dev/null 2>&1
    fi
  elif [ -e "$kk_root" ]; then kk_r=notdir
  else kk_r=none
  fi
  kk_lf=$(mktemp 2>/dev/null || printf '%s' "${'$'}{TMPDIR:-/tmp}/kk-ssh.$$")
  printf 'ok tar=%s find=%s stat=%s root=%s\n' "$kk_tar" "$kk_find" "$kk_statf" "$kk_r"
}

kk_has() {
  kk_getlist "$1" "$2"
  kk_o=
  for kk_k in $kk_l; do
    if [ -f "$kk_root/$kk_k" ]; then kk_o=${'$'}{kk_o}1; else kk_o=${'$'}{kk_o}0; fi
  done
  printf 'ok %s\n' "$kk_o"
}

kk_statreq() {
  IFS= read -r kk_k
  IFS=$kk_nl
  kk_f=$kk_root/$kk_k
  kk_x=
  if [ -f "$kk_f" ]; then
    case $kk_statf in
      gnu) kk_x=$(stat -L -c '%s %Y' "$kk_f" 2>/dev/null) ;;
      bsd) kk_x=$(stat -L -f '%z %m' "$kk_f" 2>/dev/null) ;;
    esac
  fi
  if [ -n "$kk_x" ]; then printf 'ok %s\n' "$kk_x"; else printf 'none\n'; fi
}

kk_readbatch() {
  kk_getlist "$1" "$2"
  for kk_k in $kk_l; do
    if [ -f "$kk_root/$kk_k" ]; then printf './%s\n' "$kk_k"; fi
  done > "$kk_lf"
  if [ -s "$kk_lf" ]; then
    printf 'tar\n'
    if [ "$kk_tar" = gnu ]; then kk_h=--hard-dereference; else kk_h=--no-recursion; fi
    # 2 KiB records: tar's default pads every reply to 10 KiB, which a small read pays on the wire.
    kk_e=$(tar -cf - -b 4 -C "$kk_root" --no-recursion "$kk_h" -T "$kk_lf" 2>&1 >&3)
    kk_rc=$?
    if [ -n "$kk_e" ]; then kk_e=$(kk_oneline "$kk_e"); fi
    printf 'end %s %s\n' "$kk_rc" "$kk_e"
  else
    printf 'none\n'
  fi
}

kk_readrange() {
  IFS= read -r kk_k
  IFS=$kk_nl
  kk_f=$kk_root/$kk_k
  if [ -f "$kk_f" ]; then
    kk_r=$kk_lf.r
    # GNU dd copies the range in one process; elsewhere tail | head does (dd said no once: kk_dd=no).
    # The range file is overwritten by the next read and removed when the session ends.
    if [ "$2" -le 0 ]; then : > "$kk_r"
    elif [ "$kk_dd" != no ] && dd if="$kk_f" of="$kk_r" bs=1048576 iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none 2>/dev/null; then :
    else
      kk_dd=no
      tail -c +$(($1 + 1)) "$kk_f" 2>/dev/null | head -c "$2" > "$kk_r"
    fi
    printf 'tar\n'
    kk_e=$(tar -cf - -C "${'$'}{kk_r%/*}" "${'$'}{kk_r##*/}" 2>&1 >&3)
    kk_rc=$?
    if [ -n "$kk_e" ]; then kk_e=$(kk_oneline "$kk_e"); fi
    printf 'end %s %s\n' "$kk_rc" "$kk_e"
  else
    printf 'none\n'
  fi
}

# The directories of the batch's new keys, made before tar runs. GNU tar makes a link's missing
# directories itself, but when another session makes the same one between tar's link() and its
# mkdir(), tar gives up on that link ("Cannot hard link to '.tmp-...': No such file or directory",
# the staged file being there): two sessions pushing into a fresh store lose that race at once.
# mkdir -p takes a directory made meanwhile as success. At most 256 names per mkdir (ARG_MAX).
kk_linkdirs() {
  set --
  kk_pd=
  for kk_x in $kk_l; do
    case $kk_x in c*/*) ;; *) continue ;; esac
    kk_d=${'$'}{kk_x#?}
    kk_d=${'$'}{kk_d%/*}
    if [ "$kk_d" = "$kk_pd" ]; then continue; fi
    kk_pd=$kk_d
    if [ ! -d "$kk_root/$kk_d" ]; then
      set -- "$@" "$kk_root/$kk_d"
      if [ $# -ge 256 ]; then mkdir -p "$@" 2>/dev/null; set --; fi
    fi
  done
  if [ $# -gt 0 ]; then mkdir -p "$@" 2>/dev/null; fi
}

kk_writebatch() {
  kk_getlist "$1" "$2"
  kk_b=$kk_root/$kk_sdir/$4
  kk_e=
  if [ -d "$kk_root" ] || kk_e=$(mkdir -p "$kk_root" 2>&1); then
    kk_linkdirs
    kk_e=$(head -c "$3" | { tar -xkmf - -C "$kk_root" --no-same-owner --no-same-permissions 2>&1; cat >/dev/null; })
  else
    head -c "$3" >/dev/null
    kk_e="cannot create the store directory: $kk_e"
  fi
  # Anything but "already exists" means a file may be short (ENOSPC, EIO): the whole batch
  # fails, and the links tar made for it are taken back.
  if [ -n "$kk_e" ]; then kk_e=$(kk_oneline "$kk_e"); fi
  kk_o=
  kk_i=0
  set --
  for kk_x in $kk_l; do
    kk_s=$kk_b/$kk_i
    kk_f=$kk_root/${'$'}{kk_x#?}
    if [ -n "$kk_e" ]; then
      case $kk_x in c*) if [ "$kk_s" -ef "$kk_f" ]; then set -- "$@" "$kk_f"; fi ;; esac
      kk_o=${'$'}{kk_o}x
    else
      case $kk_x in
        c*)
          if [ "$kk_s" -ef "$kk_f" ]; then kk_o=${'$'}{kk_o}1
          elif [ -f "$kk_f" ]; then kk_o=${'$'}{kk_o}0
          else kk_o=${'$'}{kk_o}x
          fi ;;
        r*)
          kk_mv=
          if kk_mkparent "$kk_f" && kk_mv=$(mv -f "$kk_s" "$kk_f" 2>&1); then kk_o=${'$'}{kk_o}1
          else kk_o=${'$'}{kk_o}x; kk_e2="$kk_e2$kk_nl$kk_mv"
          fi ;;
      esac
    fi
    kk_i=$((kk_i + 1))
  done
  if [ $# -gt 0 ]; then rm -f "$@"; fi
  printf 'ok %s\n' "$kk_o"
  if [ -z "$kk_e" ] && [ -n "$kk_e2" ]; then kk_e=$(kk_oneline "$kk_e2"); fi
  kk_e2=
  printf 'msg %s\n' "$kk_e"
  kk_staged=$((kk_staged + kk_i))
  if [ "$kk_staged" -ge 1024 ]; then kk_clean; fi
}

kk_delete() {
  kk_getlist "$1" "$2"
  if [ ! -d "$kk_root" ]; then printf 'ok\n'; return; fi
  cd "$kk_root" || { printf 'err cannot enter the store directory\n'; return; }
  set --
  kk_ds=
  for kk_k in $kk_l; do
    if [ -f "$kk_k" ]; then set -- "$@" "./$kk_k"; fi
    case $kk_k in */*) kk_ds="$kk_ds$kk_nl./${'$'}{kk_k%/*}" ;; esac
  done
  kk_e=
  if [ $# -gt 0 ]; then kk_e=$(rm -f "$@" 2>&1); kk_rc=$?; else kk_rc=0; fi
  if [ -n "$kk_ds" ]; then
    set --
    for kk_d in $kk_ds; do set -- "$@" "$kk_d"; done
    rmdir -p "$@" >/dev/null 2>&1
  fi
  cd /
  if [ "$kk_rc" -eq 0 ]; then printf 'ok\n'; else printf 'err %s\n' "$(kk_oneline "$kk_e")"; fi
}

kk_list() {
  IFS= read -r kk_k
  IFS=$kk_nl
  kk_d=$kk_root/$kk_k
  kk_d=${'$'}{kk_d%/}
  kk_rc=0
  if [ -d "$kk_d" ]; then
    case $kk_find$kk_statf in
      gnu*) find "$kk_d" -mindepth 1 -name '.tmp-*' -prune -o -type f -printf '%s %T@ %P\n' 2>/dev/null; kk_rc=$? ;;
      posixgnu) (cd "$kk_d" && find . -mindepth 1 -name '.tmp-*' -prune -o -type f -exec stat -c '%s %Y %n' {} + 2>/dev/null); kk_rc=$? ;;
      posixbsd) (cd "$kk_d" && find . -mindepth 1 -name '.tmp-*' -prune -o -type f -exec stat -f '%z %m %N' {} + 2>/dev/null); kk_rc=$? ;;
      *) kk_rc=127 ;;
    esac
  fi
  printf 'end %s\n' "$kk_rc"
}

kk_children() {
  IFS= read -r kk_k
  IFS=$kk_nl
  kk_d=$kk_root/$kk_k
  if [ -d "$kk_d" ]; then
    set +f
    for kk_e in "$kk_d"* "$kk_d".[!.]* "$kk_d"..?*; do
      if [ -e "$kk_e" ]; then printf 'n %s\n' "${'$'}{kk_e##*/}"; fi
    done
    set -f
  fi
  printf 'end\n'
}

# From here on this session is a read stream: tar archives the absolute paths it reads from
# stdin, one per line, for as long as stdin stays open. The client ends each batch with the
# sentinel file, one output record long: tar writes a record out when it needs the next block,
# so the sentinel's own data pushes out the record holding its header.
kk_streamreads() {
  kk_sd=$(mktemp -d 2>/dev/null) || { printf 'err cannot make a temporary directory\n'; return; }
  if ! head -c "$1" /dev/zero > "$kk_sd/s"; then printf 'err cannot write the sentinel file\n'; rm -rf "$kk_sd"; return; fi
  printf 'ok %s\n' "$kk_sd/s"
  tar -cPf - -b "$2" --no-recursion --hard-dereference -T - 2>/dev/null
  rm -rf "$kk_sd"
  exit 0
}

kk_flush() {
  if [ -d "$kk_root" ]; then sync -f "$kk_root" 2>/dev/null || sync; else sync; fi
  printf 'ok\n'
}

kk_main() {
  printf 'kk-ssh 1\n'
  while IFS= read -r kk_req; do
    IFS=' '
    set -- $kk_req
    IFS=$kk_nl
    kk_op=$1
    shift
    case $kk_op in
      in) kk_init "$@" ;;
      hs) kk_has "$@" ;;
      st) kk_statreq ;;
      rb) kk_readbatch "$@" ;;
      rr) kk_readrange "$@" ;;
      wb) kk_writebatch "$@" ;;
      dm) kk_delete "$@" ;;
      ls) kk_list ;;
      ch) kk_children ;;
      fl) kk_flush ;;
      sr) kk_streamreads "$@" ;;
      q) break ;;
      *) printf 'err protocol: unknown request\n'; break ;;
    esac
  done
  kk_clean
  if [ -n "$kk_lf" ]; then rm -f "$kk_lf" "$kk_lf.r"; fi
}
kk_main; exit
`;
