// SPDX-License-Identifier: MIT
// The JavaScript reference (hyperdht's transport: udx-native streams, with
// @hyperswarm/secret-stream on top when encrypted), measured the way
// tools/bench_stream measures kadpunch: one stream on loopback, sender and
// receiver in two processes, MB/s and CPU seconds per GB.
//
//   node bench.js [--mib 1024] [--plain]
//
// Run it through bench_reference.sh, which installs the packages into a
// scratch directory first.
const { fork } = require('child_process')
const UDX = require('udx-native')
const SecretStream = require('@hyperswarm/secret-stream')

const args = process.argv.slice(2)
const mib = args.includes('--mib') ? Number(args[args.indexOf('--mib') + 1]) : 1024
const plain = args.includes('--plain')
const total = mib * 1024 * 1024

function cpuSeconds (since) {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1e6
}

function open (port, remotePort, localId, remoteId, initiator) {
  const udx = new UDX()
  const socket = udx.createSocket()
  socket.bind(port, '127.0.0.1')
  const raw = udx.createStream(localId)
  return {
    socket,
    port: socket.address().port,
    connect (rp) {
      raw.connect(socket, remoteId, rp, '127.0.0.1')
      return plain ? raw : new SecretStream(initiator, raw)
    }
  }
}

if (process.argv.includes('--receiver')) {
  const side = open(0, 0, 2, 1, false)
  process.send({ port: side.port })
  process.once('message', ({ port }) => {
    const stream = side.connect(port)
    const cpu = process.cpuUsage()
    let received = 0
    stream.on('data', (d) => { received += d.byteLength })
    stream.on('end', () => {
      process.send({ received, cpu: cpuSeconds(cpu) })
      stream.end()
    })
    stream.on('close', () => { side.socket.close(); process.exit(0) })
    stream.on('error', () => {})
  })
} else {
  const child = fork(__filename, [...args, '--receiver'])
  const side = open(0, 0, 1, 2, true)
  child.once('message', ({ port }) => {
    child.send({ port: side.port })
    const stream = side.connect(port)
    const block = Buffer.alloc(64 * 1024, 0xa5)
    const cpu = process.cpuUsage()
    const t0 = process.hrtime.bigint()
    let sent = 0
    const pump = () => {
      while (sent < total) {
        sent += block.byteLength
        if (!stream.write(block)) return stream.once('drain', pump)
      }
      stream.end()
    }
    pump()
    child.once('message', ({ received, cpu: rxCpu }) => {
      const secs = Number(process.hrtime.bigint() - t0) / 1e9
      const gb = received / 1e9
      const txCpu = cpuSeconds(cpu)
      console.log(JSON.stringify({
        mbps: received / 1e6 / secs,
        sendCpuPerGb: txCpu / gb,
        recvCpuPerGb: rxCpu / gb,
        received
      }))
      stream.destroy()
      side.socket.close()
      setTimeout(() => process.exit(0), 100)
    })
    stream.on('error', () => {})
  })
}
