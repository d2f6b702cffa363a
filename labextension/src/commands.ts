import { ILabShell } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';

import { Actions } from './actions';
import { deploymentsIcon } from './icons';
import { DeploymentsModel } from './model';

export namespace CommandIDs {
  export const openPanel = 'modeldeploy:open-panel';
  export const launchNew = 'modeldeploy:launch-new';
  export const refresh = 'modeldeploy:refresh';
  export const newToken = 'modeldeploy:new-token';
}

const CATEGORY = 'Model Deployments';

export function addCommands(
  commands: CommandRegistry,
  shell: ILabShell,
  panelId: string,
  actions: Actions,
  model: DeploymentsModel,
  palette: ICommandPalette | null
): void {
  commands.addCommand(CommandIDs.openPanel, {
    label: 'Open Model Deployments Panel',
    caption: 'Show the list of model deployments in the left sidebar',
    icon: deploymentsIcon,
    execute: () => shell.activateById(panelId)
  });
  commands.addCommand(CommandIDs.launchNew, {
    label: 'Launch New Model Deployment…',
    caption: 'Open the launch form',
    execute: () => actions.openForm()
  });
  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Model Deployments',
    execute: () => model.refresh()
  });
  commands.addCommand(CommandIDs.newToken, {
    label: 'Generate Model Deployment API Token…',
    execute: () => actions.createToken()
  });
  if (palette) {
    for (const command of Object.values(CommandIDs)) {
      palette.addItem({ command, category: CATEGORY });
    }
  }
}
