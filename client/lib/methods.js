// @ts-check
// How the method groups of lib/ become HeraldClient's own methods. Each group is a class of
// methods written as if inside HeraldClient (`this` is the client); herald.js installs them on
// its prototype, so a client's state and methods stay on one object, as in a single class.

/**
 * The base of every method group. At run time an empty class (groups are never instantiated);
 * for type checking it stands for the client, whose fields and methods are spread over herald.js
 * and the groups, so `this` is typed loosely here.
 */
export const Methods = /** @type {new () => any} */ (class {});

/**
 * Defines each group's methods on `target.prototype` with their own descriptors (non-enumerable,
 * like a class's methods). A name defined twice is a mistake and fails at import.
 * @param {Function} target
 * @param {Function[]} groups
 */
export function installMethods(target, groups) {
  for (const group of groups) {
    for (const [name, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(group.prototype))) {
      if (name === "constructor") continue;
      if (Object.prototype.hasOwnProperty.call(target.prototype, name)) {
        throw new Error(`${target.name}: ${group.name} defines ${name} again`);
      }
      Object.defineProperty(target.prototype, name, descriptor);
    }
  }
}
