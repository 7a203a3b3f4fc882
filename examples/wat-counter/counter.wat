;; wat-counter: a shard written by hand in WebAssembly text, against
;; abi/ABI.md alone. One counter per name, kept in storage under the key
;; "n" as decimal text:
;;
;;   POST    count one and answer the new count   ("3")
;;   DELETE  delete the count and answer 0
;;   other   answer the count                      ("0" when absent)
;;
;; whatever the path. Assemble with wabt: wat2wasm -o wat-counter.wasm counter.wat
;;
;; Memory map (one page, grown by edgeshard_alloc for large requests):
;;   16        the key "n"
;;   32..52    decimal digits, right-aligned to 52 ($itoa)
;;   64..96    storage_get's result buffer (32 bytes)
;;   512..     the response: status u32, header count u32, body bytes
;;   4096..    the request, written by the host
(module
  ;; Host functions: module "edgeshard", group storage (abi/ABI.md section 7).
  (import "edgeshard" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i64)))
  (import "edgeshard" "storage_put" (func $storage_put (param i32 i32 i32 i32 i32) (result i32)))
  (import "edgeshard" "storage_delete" (func $storage_delete (param i32 i32) (result i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "n")

  ;; A WASI reactor's start function: nothing to set up.
  (func (export "_initialize"))

  (func (export "edgeshard_abi_version") (result i32) (i32.const 1))

  (func (export "edgeshard_init") (result i32) (i32.const 0))

  ;; edgeshard_alloc(size): the request goes at 4096; grow the memory so
  ;; that 4096 + size bytes fit. 0 when that is impossible.
  (func (export "edgeshard_alloc") (param $size i32) (result i32)
    (local $pages i32)
    (if (i32.lt_s (local.get $size) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $pages
      (i32.sub
        (i32.shr_u (i32.add (local.get $size) (i32.const 69631)) (i32.const 16)) ;; ceil((4096 + size) / 65536)
        (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 4096))

  ;; $load reads the count: 0 when "n" is absent; a host error traps (the
  ;; host answers 500 and restarts the shard from storage).
  (func $load (result i64)
    (local $n i64) (local $i i32) (local $v i64)
    (local.set $n (call $storage_get (i32.const 16) (i32.const 1) (i32.const 64) (i32.const 32)))
    (if (i64.eq (local.get $n) (i64.const -1)) (then (return (i64.const 0)))) ;; -ErrnoNotFound
    (if (i64.lt_s (local.get $n) (i64.const 0)) (then (unreachable)))
    (if (i64.gt_s (local.get $n) (i64.const 20)) (then (unreachable)))     ;; not a count of ours
    (block $done
      (loop $digit
        (br_if $done (i64.ge_s (i64.extend_i32_u (local.get $i)) (local.get $n)))
        (local.set $v
          (i64.add
            (i64.mul (local.get $v) (i64.const 10))
            (i64.extend_i32_u (i32.sub (i32.load8_u offset=64 (local.get $i)) (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    (local.get $v))

  ;; $itoa writes v (≥ 0) in decimal, ending at 52; returns where it starts.
  (func $itoa (param $v i64) (result i32)
    (local $p i32)
    (local.set $p (i32.const 52))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))

  ;; edgeshard_fetch(ptr, len): a Request starts with its method, a string:
  ;; u32 length, then the bytes. Answers (512 << 32) | response length.
  (func (export "edgeshard_fetch") (param $req i32) (param $len i32) (result i64)
    (local $v i64) (local $s i32) (local $n i32) (local $mlen i32)
    (if (i32.lt_u (local.get $len) (i32.const 4)) (then (unreachable)))
    (local.set $mlen (i32.load (local.get $req)))
    (local.set $v (call $load))
    ;; POST: u32 4, then "POST" (0x54534f50 little-endian)
    (if (i32.and
          (i32.eq (local.get $mlen) (i32.const 4))
          (i32.eq (i32.load offset=4 (local.get $req)) (i32.const 0x54534f50)))
      (then
        (local.set $v (i64.add (local.get $v) (i64.const 1)))
        (local.set $s (call $itoa (local.get $v)))
        (if (call $storage_put (i32.const 16) (i32.const 1)
                               (local.get $s) (i32.sub (i32.const 52) (local.get $s)) (i32.const 0))
          (then (unreachable)))))
    ;; DELETE: u32 6, then "DELE" "TE"
    (if (i32.and
          (i32.eq (local.get $mlen) (i32.const 6))
          (i32.and
            (i32.eq (i32.load offset=4 (local.get $req)) (i32.const 0x454c4544))
            (i32.eq (i32.load16_u offset=8 (local.get $req)) (i32.const 0x4554))))
      (then
        (drop (call $storage_delete (i32.const 16) (i32.const 1)))
        (local.set $v (i64.const 0))))
    ;; Response: status 200, no headers, body = the count.
    (local.set $s (call $itoa (local.get $v)))
    (local.set $n (i32.sub (i32.const 52) (local.get $s)))
    (i32.store (i32.const 512) (i32.const 200))
    (i32.store (i32.const 516) (i32.const 0))
    (i32.store (i32.const 520) (local.get $n))
    (memory.copy (i32.const 524) (local.get $s) (local.get $n))
    (i64.or
      (i64.shl (i64.const 512) (i64.const 32))
      (i64.extend_i32_u (i32.add (i32.const 12) (local.get $n)))))

  ;; No alarm is ever set; answer success if the host calls anyway.
  (func (export "edgeshard_alarm") (param $retry i32) (result i32) (i32.const 0))
)
