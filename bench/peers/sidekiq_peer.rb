# Sidekiq peer for run.py: the no-op job, its recorder, and the client side.
#
# Worker (started by run.py):
#   sidekiq -r ./sidekiq_peer.rb -q bench -c 2 -t 2
# Client:
#   ruby sidekiq_peer.rb enqueue-one N [WARM] | enqueue-bulk N BATCH [WARM]
#                        | latency M RATE
# WARM tasks (default 1) are enqueued, untimed, before the N timed ones (one
# batch of WARM for enqueue-bulk); all are counted in "enqueued".
# Environment: BENCH_REDIS_URL, BENCH_STAMP_DIR (worker side).
# Each client command prints one JSON line on stdout.
#
# The recorder keeps, per process, the task count and the CLOCK_MONOTONIC
# times of the first start and last end, and a background thread writes them
# every 5 ms (and at the first task) to $BENCH_STAMP_DIR/stamp-PID in the
# layout stamp.py uses (int64 count, double first, double last, little-endian).
require "json"
require "logger"
require "sidekiq"

LAT_WARM = 20 # untimed tasks the latency client sends first
REDIS_URL = ENV.fetch("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
Sidekiq.configure_client { |c| c.redis = { url: REDIS_URL } }
Sidekiq.configure_server do |c|
  c.redis = { url: REDIS_URL }
  # Sidekiq logs a "start" and a "done" line per job at INFO: not part of the
  # work being compared, and the other peers are run at WARNING too.
  Sidekiq.logger.level = Logger::WARN
end

module BenchStamp
  @lock = Mutex.new
  @count = 0
  @first = 0.0
  @last = 0.0
  @written = -1
  @file = nil
  @lat = nil

  def self.now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def self.flush
    c = f = l = nil
    @lock.synchronize { c, f, l = @count, @first, @last }
    return if c == @written
    @file.pwrite([c, f, l].pack("q<EE"), 0)
    @written = c
  end

  def self.open_files(dir)
    @file = File.open(File.join(dir, "stamp-#{Process.pid}"), File::RDWR | File::CREAT, 0o644)
    @file.pwrite([0, 0.0, 0.0].pack("q<EE"), 0)
    Thread.new do
      loop do
        sleep 0.005
        flush
      end
    end
  end

  def self.record(t_enq)
    start = now
    dir = ENV["BENCH_STAMP_DIR"]
    return nil unless dir
    first_task = false
    @lock.synchronize do
      if @file.nil?
        open_files(dir)
        first_task = true
      end
      if t_enq && t_enq > 0
        @lat ||= File.open(File.join(dir, "lat-#{Process.pid}.txt"), "a").tap { |f| f.sync = true }
        @lat.write(format("%.9f\n", start - t_enq))
      end
      @first = start if @count.zero?
      @count += 1
      @last = now
    end
    flush if first_task
    nil
  end
end

class BenchNoop
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(t_enq)
    BenchStamp.record(t_enq)
  end
end

def mono
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

if $PROGRAM_NAME == __FILE__
  cmd = ARGV[0]
  case cmd
  when "enqueue-one"
    n = Integer(ARGV[1])
    warm = Integer(ARGV[2] || 1)
    warm.times { BenchNoop.perform_async(0.0) }
    t0 = mono
    n.times { BenchNoop.perform_async(0.0) }
    dt = mono - t0
    puts JSON.generate(n: n, seconds: dt, enqueued: n + warm)
  when "enqueue-bulk"
    n = Integer(ARGV[1])
    batch = Integer(ARGV[2])
    warm = Integer(ARGV[3] || 1)
    Sidekiq::Client.push_bulk("class" => BenchNoop, "args" => Array.new(warm) { [0.0] })
    t0 = mono
    done = 0
    while done < n
      k = [batch, n - done].min
      Sidekiq::Client.push_bulk("class" => BenchNoop, "args" => Array.new(k) { [0.0] })
      done += k
    end
    dt = mono - t0
    puts JSON.generate(n: n, seconds: dt, enqueued: n + warm, batch: batch)
  when "latency"
    m = Integer(ARGV[1])
    gap = 1.0 / Float(ARGV[2])
    LAT_WARM.times { BenchNoop.perform_async(0.0) }
    nxt = mono
    m.times do
      nxt += gap
      BenchNoop.perform_async(mono)
      d = nxt - mono
      sleep d if d > 0
    end
    puts JSON.generate(n: m, enqueued: m + LAT_WARM)
  else
    abort "unknown command #{cmd.inspect}"
  end
  $stdout.flush
end
