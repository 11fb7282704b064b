// The local stack's DynamoDB: dynalite (pinned in infra/package.json), with two additions.
//
//   node dynalite_server.js DYNALITE_DIR [dynalite's own options: --host, --port, ...]
//
// 1. ReturnValuesOnConditionCheckFailure (DynamoDB, 2023; dynalite 4.0.0 drops the parameter):
//    a conditional PutItem, UpdateItem or DeleteItem that fails answers the item as it was, in
//    the error. The check runs under the item's lock, on the item the condition was checked
//    against, so the item answered is the one that failed it, as on DynamoDB.
// 2. The cost meter (cost.py): every item operation's consumed capacity, in a response header
//    (x-herald-capacity: "READ WRITE TABLE", as the stack's AWS proxy reads and removes it),
//    whether or not the caller asked for ReturnConsumedCapacity (the answer carries
//    ConsumedCapacity only if it did). dynalite computes the units as DynamoDB bills them; a
//    write whose condition failed consumes the stored item's write units, which dynalite does
//    not report, so that is added here.
// 3. UpdateTimeToLive, which dynalite does not serve: the specification is recorded and
//    DescribeTimeToLive answers it (ENABLED). Expired items are not deleted (DynamoDB deletes
//    them within days, so readers must ignore them anyway).
'use strict'
const http = require('http')
const path = require('path')

const dir = path.resolve(process.argv[2])
process.argv.splice(2, 1)
const db = require(path.join(dir, 'db'))

const CAPACITY_HEADER = 'x-herald-capacity'
const WRITES = [ 'putItem', 'updateItem', 'deleteItem', 'batchWriteItem' ]
const METERED = [ 'getItem', 'query', 'scan', 'batchGetItem', ...WRITES ]

for (const action of [ 'putItem', 'updateItem', 'deleteItem' ]) {
  require(path.join(dir, 'validations', action)).types.ReturnValuesOnConditionCheckFailure =
    { type: 'String', enum: [ 'ALL_OLD', 'NONE' ] }
}

const checkConditional = db.checkConditional
db.checkConditional = function (data, existingItem) {
  const err = checkConditional(data, existingItem)
  if (err) {
    if (existingItem && data.ReturnValuesOnConditionCheckFailure === 'ALL_OLD') err.body.Item = existingItem
    err.capacity = { write: db.capacityUnits(existingItem, false), table: data.TableName }
  }
  return err
}

// The capacity of the answer being sent. dynalite answers from the action's callback with one
// synchronous sendData (JSON.stringify, setHeader, res.end), so the capacity set just before it
// is that answer's: nothing else runs in between on Node's one thread.
let pending = null

function units (consumed) {
  const list = Array.isArray(consumed) ? consumed : consumed ? [ consumed ] : []
  return {
    total: list.reduce((sum, c) => sum + (c.CapacityUnits || 0), 0),
    table: list.length ? list[0].TableName : '',
  }
}

for (const action of METERED) {
  const file = require.resolve(path.join(dir, 'actions', action))
  const run = require(file)
  const write = WRITES.includes(action)
  require.cache[file].exports = function (store, data, cb) {
    const asked = data.ReturnConsumedCapacity === 'TOTAL' || data.ReturnConsumedCapacity === 'INDEXES'
    if (!asked) data.ReturnConsumedCapacity = 'TOTAL'
    run(store, data, function (err, result) {
      if (err && err.capacity) {
        pending = { read: 0, write: err.capacity.write, table: err.capacity.table }
      }
      else if (!err && result) {
        const { total, table } = units(result.ConsumedCapacity)
        pending = { read: write ? 0 : total, write: write ? total : 0, table: table || data.TableName || '' }
        if (!asked) delete result.ConsumedCapacity
      }
      cb(err, result)
    })
  }
}

const end = http.ServerResponse.prototype.end
http.ServerResponse.prototype.end = function (...args) {
  if (pending !== null) {
    if (!this.headersSent) {
      this.setHeader(CAPACITY_HEADER, `${pending.read} ${Math.round(pending.write)} ${pending.table}`)
    }
    pending = null
  }
  return end.apply(this, args)
}

const timeToLive = new Map()   // table name -> TimeToLiveSpecification

function answer (res, status, body) {
  const text = JSON.stringify(body)
  res.statusCode = status
  res.setHeader('Content-Type', 'application/x-amz-json-1.0')
  res.setHeader('Content-Length', Buffer.byteLength(text))
  res.end(text)
}

function serveTimeToLive (operation, req, res, next) {
  const chunks = []
  req.on('data', c => chunks.push(c))
  req.on('end', () => {
    let body
    try { body = JSON.parse(Buffer.concat(chunks).toString() || '{}') }
    catch (e) { return answer(res, 400, { __type: 'com.amazon.coral.service#SerializationException' }) }
    const spec = body.TimeToLiveSpecification
    if (operation === 'DescribeTimeToLive') {
      const known = timeToLive.get(body.TableName)
      if (known) return answer(res, 200, { TimeToLiveDescription: known.Enabled
        ? { TimeToLiveStatus: 'ENABLED', AttributeName: known.AttributeName }
        : { TimeToLiveStatus: 'DISABLED' } })
      return next(Buffer.concat(chunks))
    }
    if (typeof body.TableName !== 'string' || !spec || typeof spec.Enabled !== 'boolean' ||
        typeof spec.AttributeName !== 'string' || !spec.AttributeName) {
      return answer(res, 400, { __type: 'com.amazon.coral.validate#ValidationException',
        message: 'TableName and TimeToLiveSpecification (Enabled, AttributeName) are required' })
    }
    timeToLive.set(body.TableName, spec)
    answer(res, 200, { TimeToLiveSpecification: spec })
  })
}

const createServer = http.createServer
http.createServer = function (...args) {
  const handler = args.pop()
  return createServer.call(this, ...args, function (req, res) {
    const operation = String(req.headers['x-amz-target'] || '').split('.')[1]
    if (operation !== 'UpdateTimeToLive' && operation !== 'DescribeTimeToLive') return handler(req, res)
    serveTimeToLive(operation, req, res, function (body) {
      // dynalite's own answer (the table's existence, DISABLED): the body, read already, again.
      const { Readable } = require('stream')
      const replay = Object.assign(Readable.from([ body ]), { headers: req.headers, method: req.method, url: req.url })
      handler(replay, res)
    })
  })
}

// Exit on SIGTERM through process.exit, so that `node --cpu-prof` writes its profile.
process.on('SIGTERM', () => process.exit(0))

require(path.join(dir, 'cli.js'))
